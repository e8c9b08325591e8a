//! Markdown (CommonMark + tables, strikethrough, task lists) → sanitized HTML. Math is
//! shown as written: `$…$` and `$$…$$` are kept away from the Markdown parser.

use std::collections::HashSet;

use pulldown_cmark::{html, Options, Parser};

use super::escape;

/// Replaces math spans by placeholders so that `_` and `*` inside them stay as written.
fn protect_math(src: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(src.len());
    let mut math = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find('$') {
        let display = rest[start..].starts_with("$$");
        let delim = if display { "$$" } else { "$" };
        let after = &rest[start + delim.len()..];
        let Some(len) = after.find(delim) else { break };
        // `$` followed by space or a digit is more likely money than math.
        if !display && (len == 0 || after.starts_with(' ') || after.starts_with(char::is_numeric)) {
            out.push_str(&rest[..start + 1]);
            rest = &rest[start + 1..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(&format!("NBXMATH{}X", math.len()));
        math.push(format!("{delim}{}{delim}", &after[..len]));
        rest = &after[len + delim.len()..];
    }
    out.push_str(rest);
    (out, math)
}

fn sanitizer() -> ammonia::Builder<'static> {
    let mut b = ammonia::Builder::default();
    b.url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .add_tags(["input"])
        .add_tag_attributes("input", ["type", "checked", "disabled"])
        .add_generic_attributes(["class"]);
    b
}

/// Markdown → HTML that is safe to put in a page: no script, no event handlers, no
/// `javascript:` URLs, no style.
pub fn render_markdown(src: &str) -> String {
    let (protected, math) = protect_math(src);
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut raw = String::new();
    html::push_html(&mut raw, Parser::new_ext(&protected, options));
    let mut clean = sanitizer().clean(&raw).to_string();
    for (i, m) in math.iter().enumerate() {
        clean = clean.replace(
            &format!("NBXMATH{i}X"),
            &format!("<span class=\"math\">{}</span>", escape(m)),
        );
    }
    clean
}

/// The first words of a Markdown text, as plain text (for gallery previews).
pub fn plain_preview(src: &str, max_chars: usize) -> String {
    let text: String = Parser::new(src)
        .filter_map(|e| match e {
            pulldown_cmark::Event::Text(t) | pulldown_cmark::Event::Code(t) => {
                Some(t.to_string() + " ")
            }
            pulldown_cmark::Event::SoftBreak | pulldown_cmark::Event::HardBreak => Some(" ".into()),
            _ => None,
        })
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > max_chars {
        format!("{}…", text.chars().take(max_chars).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_markdown_is_defused() {
        let html = render_markdown(
            "# Hi\n<script>alert(1)</script>\n<img src=x onerror=alert(2)>\n[x](javascript:alert(3))\n<a href=\"javascript:alert(4)\">y</a>",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(!html.contains("href=\"javascript:"), "{html}");
        let link = render_markdown("[x](javascript:alert(3))");
        assert!(!link.contains("href=\"javascript:"), "{link}");
        assert!(html.contains("<h1>Hi</h1>"));
    }

    #[test]
    fn tables_and_math_as_written() {
        let html = render_markdown(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\nEnergy $E = m_1 c^2$ and $$\\sum_i x_i$$ cost $5.",
        );
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("$E = m_1 c^2$"), "{html}");
        assert!(html.contains("$$\\sum_i x_i$$"), "{html}");
        assert!(html.contains("$5"), "{html}");
    }
}
