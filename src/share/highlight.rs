//! A small Python highlighter: keywords, builtins, strings, comments, numbers. Enough to
//! make code cells readable without a heavy dependency; other languages stay plain.

use super::escape;

const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield", "match", "case",
];
const BUILTINS: &[&str] = &[
    "print",
    "len",
    "range",
    "int",
    "float",
    "str",
    "list",
    "dict",
    "set",
    "tuple",
    "open",
    "sum",
    "min",
    "max",
    "abs",
    "enumerate",
    "zip",
    "map",
    "filter",
    "sorted",
    "isinstance",
    "type",
    "super",
    "self",
];

fn span(class: &str, text: &str) -> String {
    format!("<span class=\"{class}\">{}</span>", escape(text))
}

pub fn highlight(code: &str, language: &str) -> String {
    if !language.eq_ignore_ascii_case("python") {
        return escape(code);
    }
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '#' {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            out.push_str(&span(
                "tok-comment",
                &chars[i..end].iter().collect::<String>(),
            ));
            i = end;
        } else if c == '"' || c == '\'' {
            let j = string_end(&chars, i);
            let end = j.min(chars.len());
            out.push_str(&span(
                "tok-string",
                &chars[i..end].iter().collect::<String>(),
            ));
            i = end;
        } else if c.is_ascii_digit() {
            let end = chars[i..]
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_'))
                .map_or(chars.len(), |p| i + p);
            out.push_str(&span(
                "tok-number",
                &chars[i..end].iter().collect::<String>(),
            ));
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let end = chars[i..]
                .iter()
                .position(|c| !(c.is_alphanumeric() || *c == '_'))
                .map_or(chars.len(), |p| i + p);
            let word: String = chars[i..end].iter().collect();
            if KEYWORDS.contains(&word.as_str()) {
                out.push_str(&span("tok-keyword", &word));
            } else if BUILTINS.contains(&word.as_str()) {
                out.push_str(&span("tok-builtin", &word));
            } else {
                out.push_str(&escape(&word));
            }
            i = end;
        } else {
            out.push_str(&escape(&c.to_string()));
            i += 1;
        }
    }
    out
}

/// Where the string literal starting at `i` (a quote) ends: after its closing quote (or
/// three, for a triple-quoted one), at the end of its line for an unclosed short one, or
/// at the end of the code.
fn string_end(chars: &[char], i: usize) -> usize {
    let c = chars[i];
    let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < chars.len() {
        if chars[j] == '\\' {
            j += 2;
            continue;
        }
        if triple {
            if j + 2 < chars.len() && chars[j] == c && chars[j + 1] == c && chars[j + 2] == c {
                return j + 3;
            }
        } else if chars[j] == c || chars[j] == '\n' {
            return j + 1;
        }
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_is_highlighted_and_escaped() {
        let html = highlight("def f(x):  # <b>\n    return '<x>' + 1", "python");
        assert!(html.contains("<span class=\"tok-keyword\">def</span>"));
        assert!(html.contains("<span class=\"tok-comment\"># &lt;b&gt;</span>"));
        assert!(html.contains("<span class=\"tok-string\">&#39;&lt;x&gt;&#39;</span>"));
        assert!(html.contains("<span class=\"tok-number\">1</span>"));
        assert_eq!(highlight("<a>", "r"), "&lt;a&gt;");
    }
}
