//! ANSI colour escapes (as in Python tracebacks) turned into HTML spans, everything else
//! escaped.

use super::escape;

const COLORS: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// Text with SGR escapes → HTML. Other escape sequences are dropped.
pub fn ansi_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    let mut chars = text.chars().peekable();
    let mut plain = String::new();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        out.push_str(&escape(&plain));
        plain.clear();
        if chars.peek() != Some(&'[') {
            continue;
        }
        chars.next();
        let mut params = String::new();
        let mut last = ' ';
        for p in chars.by_ref() {
            if p.is_ascii_alphabetic() {
                last = p;
                break;
            }
            params.push(p);
        }
        if last != 'm' {
            continue;
        }
        let mut classes = Vec::new();
        for code in params.split(';').filter_map(|p| p.parse::<u32>().ok()) {
            match code {
                0 => classes.clear(),
                1 => classes.push("ansi-bold".to_string()),
                30..=37 => classes.push(format!("ansi-{}", COLORS[(code - 30) as usize])),
                90..=97 => classes.push(format!("ansi-bright-{}", COLORS[(code - 90) as usize])),
                40..=47 => classes.push(format!("ansi-bg-{}", COLORS[(code - 40) as usize])),
                _ => {}
            }
        }
        if open {
            out.push_str("</span>");
            open = false;
        }
        if !classes.is_empty() {
            out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
            open = true;
        }
    }
    out.push_str(&escape(&plain));
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_text_is_escaped() {
        let html = ansi_to_html("\u{1b}[0;31mZeroDivisionError\u{1b}[0m: <b>x</b>");
        assert_eq!(
            html,
            "<span class=\"ansi-red\">ZeroDivisionError</span>: &lt;b&gt;x&lt;/b&gt;"
        );
        assert_eq!(ansi_to_html("a\u{1b}[2Kb"), "ab");
    }
}
