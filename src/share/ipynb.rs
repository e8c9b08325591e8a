//! Server-side rendering of Jupyter notebooks (nbformat 4, any minor version) into HTML
//! that is safe on Notebox's origin: markdown sanitized, images only as images, HTML
//! outputs in sandboxed frames, scripts and widgets dropped with a visible note.

use base64::Engine;
use serde_json::Value;

use super::ansi::ansi_to_html;
use super::escape;
use super::highlight::highlight;
use super::markdown::{plain_preview, render_markdown};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("this file is not a valid notebook: {0}")]
    Malformed(String),
    #[error("this notebook uses format version {0}, which Notebox does not render; open it in Jupyter and save it to upgrade it to version 4")]
    OldFormat(i64),
    #[error("this notebook is too large to show here ({size_mib:.1} MiB; the limit is {limit_mib} MiB); download it instead")]
    TooLarge { size_mib: f64, limit_mib: u64 },
}

/// A rendered notebook.
pub struct Rendered {
    pub html: String,
    pub language: String,
    pub cells: usize,
}

/// nbformat stores text either as one string or as a list of lines.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

fn language_of(nb: &Value) -> String {
    nb["metadata"]["kernelspec"]["language"]
        .as_str()
        .or_else(|| nb["metadata"]["language_info"]["name"].as_str())
        .unwrap_or("python")
        .to_string()
}

fn parse(bytes: &[u8], limit_mib: u64) -> Result<Value, RenderError> {
    let size_mib = bytes.len() as f64 / (1024.0 * 1024.0);
    if size_mib > limit_mib as f64 {
        return Err(RenderError::TooLarge {
            size_mib,
            limit_mib,
        });
    }
    let nb: Value =
        serde_json::from_slice(bytes).map_err(|e| RenderError::Malformed(e.to_string()))?;
    match nb["nbformat"].as_i64() {
        Some(4) => {}
        Some(v) => return Err(RenderError::OldFormat(v)),
        None => return Err(RenderError::Malformed("it has no nbformat version".into())),
    }
    if !nb["cells"].is_array() {
        return Err(RenderError::Malformed("it has no list of cells".into()));
    }
    Ok(nb)
}

/// A base64 payload as nbformat stores it (possibly split in lines), checked.
fn base64_payload(v: &Value) -> Option<String> {
    let joined: String = text(v).chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined.as_bytes())
        .ok()
        .map(|_| joined)
}

fn note(message: &str) -> String {
    format!("<div class=\"output-note\">{}</div>", escape(message))
}

/// One display_data / execute_result bundle: the richest safe representation.
fn render_bundle(data: &Value) -> String {
    let Some(map) = data.as_object() else {
        return String::new();
    };
    if map.contains_key("application/vnd.jupyter.widget-view+json")
        && !map.contains_key("image/png")
    {
        return note("An interactive widget is not shown here; run the notebook to see it.");
    }
    for mime in ["image/png", "image/jpeg", "image/gif"] {
        if let Some(payload) = map.get(mime).and_then(base64_payload) {
            return format!("<img class=\"output-image\" alt=\"output image\" src=\"data:{mime};base64,{payload}\">");
        }
    }
    if let Some(svg) = map.get("image/svg+xml") {
        // As an image, never inline markup: scripts in an SVG do not run inside <img>.
        let encoded = base64::engine::general_purpose::STANDARD.encode(text(svg).as_bytes());
        return format!("<img class=\"output-image\" alt=\"output image\" src=\"data:image/svg+xml;base64,{encoded}\">");
    }
    if let Some(html) = map.get("text/html") {
        // Its own document, in a sandbox without scripts or our origin.
        return format!(
            "<iframe class=\"output-html\" sandbox=\"\" referrerpolicy=\"no-referrer\" loading=\"lazy\" title=\"HTML output\" srcdoc=\"{}\"></iframe>",
            escape(&text(html))
        );
    }
    if let Some(md) = map.get("text/markdown") {
        return format!(
            "<div class=\"output-markdown\">{}</div>",
            render_markdown(&text(md))
        );
    }
    if let Some(latex) = map.get("text/latex") {
        return format!(
            "<pre class=\"output-text math\">{}</pre>",
            escape(&text(latex))
        );
    }
    if let Some(plain) = map.get("text/plain") {
        return format!(
            "<pre class=\"output-text\">{}</pre>",
            ansi_to_html(&text(plain))
        );
    }
    if map.contains_key("application/javascript") || map.keys().any(|k| k.contains("javascript")) {
        return note(
            "A JavaScript output is not shown here: scripts from notebooks never run on this page.",
        );
    }
    note("An output of a type this page cannot show.")
}

fn render_output(output: &Value) -> String {
    match output["output_type"].as_str() {
        Some("stream") => {
            let stream = if output["name"] == "stderr" {
                "stderr"
            } else {
                "stdout"
            };
            format!(
                "<pre class=\"output-text {stream}\">{}</pre>",
                ansi_to_html(&text(&output["text"]))
            )
        }
        Some("execute_result") | Some("display_data") => render_bundle(&output["data"]),
        Some("error") => {
            let lines: Vec<String> = output["traceback"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let body = if lines.is_empty() {
                format!(
                    "{}: {}",
                    output["ename"].as_str().unwrap_or("Error"),
                    output["evalue"].as_str().unwrap_or("")
                )
            } else {
                lines.join("\n")
            };
            format!(
                "<pre class=\"output-text error\">{}</pre>",
                ansi_to_html(&body)
            )
        }
        _ => note("An output of an unknown kind is not shown."),
    }
}

fn render_cell(cell: &Value, language: &str) -> String {
    let source = text(&cell["source"]);
    match cell["cell_type"].as_str() {
        Some("markdown") => format!(
            "<div class=\"cell markdown\">{}</div>",
            render_markdown(&source)
        ),
        Some("code") => {
            let count = match cell["execution_count"].as_i64() {
                Some(n) => n.to_string(),
                None => " ".to_string(),
            };
            let outputs: String = cell["outputs"]
                .as_array()
                .map(|o| o.iter().map(render_output).collect())
                .unwrap_or_default();
            let outputs = if outputs.is_empty() {
                String::new()
            } else {
                format!("<div class=\"outputs\"><div class=\"prompt\">Out&nbsp;[{count}]:</div><div class=\"output-list\">{outputs}</div></div>")
            };
            format!(
                "<div class=\"cell code\"><div class=\"input\"><div class=\"prompt\">In&nbsp;[{count}]:</div><pre class=\"source\"><code>{}</code></pre></div>{outputs}</div>",
                highlight(&source, language)
            )
        }
        Some("raw") => format!(
            "<div class=\"cell raw\"><pre>{}</pre></div>",
            escape(&source)
        ),
        _ => String::new(),
    }
}

/// Renders a notebook file's bytes.
pub fn render_ipynb(bytes: &[u8], limit_mib: u64) -> Result<Rendered, RenderError> {
    let nb = parse(bytes, limit_mib)?;
    let language = language_of(&nb);
    let cells = nb["cells"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let html: String = cells.iter().map(|c| render_cell(c, &language)).collect();
    Ok(Rendered {
        html,
        language,
        cells: cells.len(),
    })
}

/// The first markdown cell as plain text, for previews.
pub fn first_markdown_preview(bytes: &[u8], limit_mib: u64, max_chars: usize) -> Option<String> {
    let nb = parse(bytes, limit_mib).ok()?;
    nb["cells"]
        .as_array()?
        .iter()
        .find(|c| c["cell_type"] == "markdown")
        .map(|c| plain_preview(&text(&c["source"]), max_chars))
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nb(cells: Value, minor: i64) -> Vec<u8> {
        json!({"nbformat": 4, "nbformat_minor": minor, "metadata": {"kernelspec": {"language": "python", "name": "python3"}}, "cells": cells})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn code_text_and_png_outputs() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nfake");
        let bytes = nb(
            json!([
                {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "Some *text*"]},
                {"cell_type": "code", "execution_count": 3, "metadata": {}, "source": "print(1+1)", "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": ["2\n"]},
                    {"output_type": "display_data", "metadata": {}, "data": {"image/png": png, "text/plain": "<Figure>"}}
                ]}
            ]),
            4,
        );
        let r = render_ipynb(&bytes, 10).expect("renders");
        assert_eq!(r.cells, 2);
        assert!(r.html.contains("<h1>Title</h1>"));
        assert!(r.html.contains("In&nbsp;[3]:"));
        assert!(r.html.contains("<span class=\"tok-builtin\">print</span>"));
        assert!(r
            .html
            .contains("<pre class=\"output-text stdout\">2\n</pre>"));
        assert!(r.html.contains("src=\"data:image/png;base64,"));
    }

    #[test]
    fn hostile_outputs_are_contained() {
        let svg = "<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>";
        let bytes = nb(
            json!([
                {"cell_type": "markdown", "metadata": {}, "source": "<script>alert(1)</script><img src=x onerror=alert(1)>"},
                {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "x", "outputs": [
                    {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<script>alert(2)</script><b onclick=alert(3)>hi</b>"}},
                    {"output_type": "display_data", "metadata": {}, "data": {"image/svg+xml": svg}},
                    {"output_type": "display_data", "metadata": {}, "data": {"application/javascript": "alert(4)"}},
                    {"output_type": "display_data", "metadata": {}, "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "w"}},
                    {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": "<script>alert(5)</script>"}}
                ]}
            ]),
            5,
        );
        let html = render_ipynb(&bytes, 10).expect("renders").html;
        // The only '<script' text left is escaped inside a sandboxed srcdoc or a <pre>.
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror=alert"), "{html}");
        assert!(html.contains("<iframe class=\"output-html\" sandbox=\"\""));
        assert!(html.contains("data:image/svg+xml;base64,"));
        assert!(html.contains("JavaScript output is not shown"));
        assert!(html.contains("widget is not shown"));
    }

    #[test]
    fn errors_have_colours_and_bad_files_readable_messages() {
        let bytes = nb(
            json!([{"cell_type": "code", "execution_count": 2, "metadata": {}, "source": "1/0", "outputs": [
                {"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                 "traceback": ["\u{1b}[0;31mZeroDivisionError\u{1b}[0m: division by zero"]}
            ]}]),
            2,
        );
        let html = render_ipynb(&bytes, 10).expect("renders").html;
        assert!(
            html.contains("<span class=\"ansi-red\">ZeroDivisionError</span>"),
            "{html}"
        );
        assert!(matches!(
            render_ipynb(b"{not json", 10),
            Err(RenderError::Malformed(_))
        ));
        let v3 = json!({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}).to_string();
        assert_eq!(
            render_ipynb(v3.as_bytes(), 10).err(),
            Some(RenderError::OldFormat(3))
        );
        let big = vec![b' '; 2 * 1024 * 1024];
        assert!(matches!(
            render_ipynb(&big, 1),
            Err(RenderError::TooLarge { .. })
        ));
        assert!(render_ipynb(br#"{"nbformat": 4}"#, 1).is_err());
    }
}
