//! ANSI escapes in notebook outputs (IPython tracebacks, coloured logs) turned into HTML
//! spans, everything else escaped.
//!
//! anstyle-parse (the VT state machine behind clap's terminal output) splits the text into
//! characters and control sequences, so every escape sequence — CSI, OSC hyperlinks, cut
//! off at the end — is recognised and dropped; only SGR (`ESC [ … m`) is interpreted here.
//! Colours become classes, never `style=`: the share page's CSP (`style-src 'self'`)
//! blocks inline styles. static/ansi.css styles the 16 named colours and `ansi-fg-N` /
//! `ansi-bg-N` for the rest of the 256-colour palette; 24-bit colours take the nearest
//! palette entry.

use anstyle_parse::{Params, ParamsIter, Parser, Perform};

use super::escape;

const NAMES: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// Text with SGR escapes → HTML. Other escape sequences and control characters (but
/// newlines, tabs and carriage returns) are dropped.
pub fn ansi_to_html(text: &str) -> String {
    let mut html = Html::default();
    let mut parser: Parser = Parser::default();
    for byte in text.bytes() {
        parser.advance(&mut html, byte);
    }
    html.finish()
}

/// The graphic rendition in effect: what SGR parameters switch on and off (each attribute
/// is independent of the others, as in a terminal).
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    faint: bool,
    italic: bool,
    underline: bool,
    /// Palette index 0-255; `None` is the page's own colour.
    fg: Option<u8>,
    bg: Option<u8>,
}

impl Style {
    /// Applies one SGR sequence. Parameters accumulate (`1` then `31` is bold red) until
    /// reset by `0`, `22`, `39`, … as in a terminal.
    fn apply(&mut self, params: &Params) {
        if params.is_empty() {
            *self = Style::default();
            return;
        }
        let mut groups = params.iter();
        while let Some(group) = groups.next() {
            match *group {
                [0] => *self = Style::default(),
                [1] => self.bold = true,
                [2] => self.faint = true,
                [3] => self.italic = true,
                // `4:0` (colon sub-parameter) is "no underline"; `4:n` are kinds of one.
                [4] => self.underline = true,
                [4, kind, ..] => self.underline = kind != 0,
                [22] => (self.bold, self.faint) = (false, false),
                [23] => self.italic = false,
                [24] => self.underline = false,
                [c @ 30..=37] => self.fg = Some((c - 30) as u8),
                [c @ 90..=97] => self.fg = Some((c - 90 + 8) as u8),
                [38, ref rest @ ..] => {
                    if let Some(c) = extended_colour(rest, &mut groups) {
                        self.fg = Some(c);
                    }
                }
                [39] => self.fg = None,
                [c @ 40..=47] => self.bg = Some((c - 40) as u8),
                [c @ 100..=107] => self.bg = Some((c - 100 + 8) as u8),
                [48, ref rest @ ..] => {
                    if let Some(c) = extended_colour(rest, &mut groups) {
                        self.bg = Some(c);
                    }
                }
                [49] => self.bg = None,
                _ => {}
            }
        }
    }

    fn classes(&self) -> Vec<String> {
        let mut classes = Vec::new();
        for (on, class) in [
            (self.bold, "ansi-bold"),
            (self.faint, "ansi-faint"),
            (self.italic, "ansi-italic"),
            (self.underline, "ansi-underline"),
        ] {
            if on {
                classes.push(class.to_string());
            }
        }
        if let Some(c) = self.fg {
            classes.push(match c {
                0..=7 => format!("ansi-{}", NAMES[c as usize]),
                8..=15 => format!("ansi-bright-{}", NAMES[c as usize - 8]),
                _ => format!("ansi-fg-{c}"),
            });
        }
        if let Some(c) = self.bg {
            classes.push(match c {
                0..=7 => format!("ansi-bg-{}", NAMES[c as usize]),
                8..=15 => format!("ansi-bg-bright-{}", NAMES[c as usize - 8]),
                _ => format!("ansi-bg-{c}"),
            });
        }
        classes
    }
}

/// The colour after a `38` or `48`: `5;n` (256 colours) or `2;r;g;b` (24-bit), written
/// with semicolons (IPython, Pygments) or as colon sub-parameters (`38:5:n`,
/// `38:2::r:g:b`). `None` for a malformed one, which changes nothing.
fn extended_colour(subparams: &[u16], groups: &mut ParamsIter<'_>) -> Option<u8> {
    let byte = |v: u16| u8::try_from(v).ok();
    match subparams {
        [5, n, ..] => byte(*n),
        [2, _, r, g, b, ..] | [2, r, g, b] => {
            Some(nearest_palette(byte(*r)?, byte(*g)?, byte(*b)?))
        }
        [] => {
            let mut next = || groups.next().and_then(|g| g.first().copied());
            match next()? {
                5 => byte(next()?),
                2 => {
                    let (r, g, b) = (byte(next()?)?, byte(next()?)?, byte(next()?)?);
                    Some(nearest_palette(r, g, b))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The xterm palette's levels for each channel of the 6×6×6 cube (indices 16-231).
const CUBE: [u8; 6] = [0x00, 0x5f, 0x87, 0xaf, 0xd7, 0xff];

/// The entry of the 256-colour palette's cube or grey ramp closest to an RGB colour.
fn nearest_palette(r: u8, g: u8, b: u8) -> u8 {
    let nearest_level = |v: u8| {
        (0..CUBE.len())
            .min_by_key(|&i| CUBE[i].abs_diff(v))
            .unwrap_or(0)
    };
    let (ri, gi, bi) = (nearest_level(r), nearest_level(g), nearest_level(b));
    let cube = 16 + 36 * ri + 6 * gi + bi;
    let distance = |(pr, pg, pb): (u8, u8, u8)| {
        [(pr, r), (pg, g), (pb, b)]
            .iter()
            .map(|&(p, v)| u32::from(p.abs_diff(v)).pow(2))
            .sum::<u32>()
    };
    let cube_distance = distance((CUBE[ri], CUBE[gi], CUBE[bi]));
    // Greys 232-255 are 8, 18, …, 238.
    let mean = (u32::from(r) + u32::from(g) + u32::from(b)) / 3;
    let grey = (mean.saturating_sub(3) / 10).min(23) as u8;
    let level = 8 + 10 * grey;
    if distance((level, level, level)) < cube_distance {
        232 + grey
    } else {
        cube as u8
    }
}

/// Collects the output: runs of text in one style share a span, and no span is left
/// open or empty.
#[derive(Default)]
struct Html {
    out: String,
    run: String,
    /// The style escape sequences have set …
    style: Style,
    /// … and the one of the span now open (default: no span open).
    shown: Style,
}

impl Html {
    fn text(&mut self, c: char) {
        if self.style != self.shown {
            self.flush();
            if self.shown != Style::default() {
                self.out.push_str("</span>");
            }
            if self.style != Style::default() {
                self.out.push_str("<span class=\"");
                self.out.push_str(&self.style.classes().join(" "));
                self.out.push_str("\">");
            }
            self.shown = self.style;
        }
        self.run.push(c);
    }

    fn flush(&mut self) {
        self.out.push_str(&escape(&self.run));
        self.run.clear();
    }

    fn finish(mut self) -> String {
        self.flush();
        if self.shown != Style::default() {
            self.out.push_str("</span>");
        }
        self.out
    }
}

impl Perform for Html {
    fn print(&mut self, c: char) {
        self.text(c);
    }

    fn execute(&mut self, byte: u8) {
        if matches!(byte, b'\n' | b'\t' | b'\r') {
            self.text(char::from(byte));
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: u8) {
        if action == b'm' && intermediates.is_empty() && !ignore {
            self.style.apply(params);
        }
    }
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

    /// Escape sequences as IPython writes them. The first block is copied from the
    /// outputs of IPython 9.18 / Pygments 2.21 (the test image's kernel) for a
    /// ZeroDivisionError raised in a function and a `print` of bold red; the second is
    /// the `0;3Xm` form of IPython ≤ 8.
    #[test]
    fn real_jupyter_traceback_sequences() {
        let table: &[(&str, &str)] = &[
            // IPython 9: rule and exception name, default colour restored with 39. Runs
            // in one style share one span.
            (
                "\u{1b}[31m---\u{1b}[39m",
                "<span class=\"ansi-red\">---</span>",
            ),
            (
                "\u{1b}[36mCell\u{1b}[39m\u{1b}[36m \u{1b}[39m\u{1b}[32mIn[1]\u{1b}[39m\u{1b}[32m, line 5\u{1b}[39m",
                "<span class=\"ansi-cyan\">Cell </span><span class=\"ansi-green\">In[1], line 5</span>",
            ),
            // Pygments' 256-colour keyword: colour 28 and bold in one sequence, and
            // `39;00` after it. 28 is not "strikethrough off", 5 not "blink".
            (
                "\u{1b}[38;5;28;01mdef\u{1b}[39;00m f(x):",
                "<span class=\"ansi-bold ansi-fg-28\">def</span> f(x):",
            ),
            // Comment: colour 66, italic (03).
            (
                "    \u{1b}[38;5;66;03m# divide\u{1b}[39;00m\n",
                "    <span class=\"ansi-italic ansi-fg-66\"># divide</span>\n",
            ),
            (
                "\u{1b}[32m----> \u{1b}[39m\u{1b}[32m3\u{1b}[39m     \u{1b}[38;5;28;01mreturn\u{1b}[39;00m \u{1b}[32m1\u{1b}[39m / x\n",
                "<span class=\"ansi-green\">----&gt; 3</span>     \
                 <span class=\"ansi-bold ansi-fg-28\">return</span> <span class=\"ansi-green\">1</span> / x\n",
            ),
            ("\u{1b}[1;31mbold red\u{1b}[0m\n", "<span class=\"ansi-bold ansi-red\">bold red</span>\n"),
            // IPython ≤ 8.
            (
                "\u{1b}[0;31mZeroDivisionError\u{1b}[0m                         Traceback",
                "<span class=\"ansi-red\">ZeroDivisionError</span>                         Traceback",
            ),
            (
                "\u{1b}[0;32m----> 1\u{1b}[0;31m \u{1b}[38;5;241m1\u{1b}[39m\u{1b}[38;5;241m/\u{1b}[39m\u{1b}[38;5;241m0\u{1b}[39m",
                "<span class=\"ansi-green\">----&gt; 1</span><span class=\"ansi-red\"> </span>\
                 <span class=\"ansi-fg-241\">1/0</span>",
            ),
            (
                "\u{1b}[1;32mdef\u{1b}[0m \u{1b}[0;34mf\u{1b}[0m",
                "<span class=\"ansi-bold ansi-green\">def</span> <span class=\"ansi-blue\">f</span>",
            ),
        ];
        for (ansi, html) in table {
            assert_eq!(ansi_to_html(ansi), *html, "{ansi:?}");
        }
    }

    #[test]
    fn bold_lasts_across_colour_changes_until_reset() {
        assert_eq!(
            ansi_to_html("\u{1b}[1m\u{1b}[31mA\u{1b}[32mB\u{1b}[39mC\u{1b}[22mD"),
            "<span class=\"ansi-bold ansi-red\">A</span><span class=\"ansi-bold ansi-green\">B</span>\
             <span class=\"ansi-bold\">C</span>D"
        );
        assert_eq!(
            ansi_to_html("\u{1b}[1;4;97;104mx\u{1b}[24;49my\u{1b}[mz"),
            "<span class=\"ansi-bold ansi-underline ansi-bright-white ansi-bg-bright-blue\">x</span>\
             <span class=\"ansi-bold ansi-bright-white\">y</span>z"
        );
    }

    #[test]
    fn extended_colours_in_every_spelling() {
        let fg = |seq: &str| ansi_to_html(&format!("\u{1b}[{seq}mx"));
        assert_eq!(fg("38;5;31"), "<span class=\"ansi-fg-31\">x</span>");
        assert_eq!(fg("38:5:208"), "<span class=\"ansi-fg-208\">x</span>");
        assert_eq!(fg("48;5;3"), "<span class=\"ansi-bg-yellow\">x</span>");
        assert_eq!(fg("38;5;9"), "<span class=\"ansi-bright-red\">x</span>");
        assert_eq!(fg("38;2;255;0;0"), "<span class=\"ansi-fg-196\">x</span>");
        assert_eq!(fg("38:2::0:135:255"), "<span class=\"ansi-fg-33\">x</span>");
        assert_eq!(
            fg("48;2;128;128;128"),
            "<span class=\"ansi-bg-244\">x</span>"
        );
        // Malformed ones change nothing and do not eat the parameters after them.
        assert_eq!(fg("38;5;300;1"), "<span class=\"ansi-bold\">x</span>");
        assert_eq!(fg("38;5"), "x");
    }

    #[test]
    fn other_sequences_and_controls_are_dropped_safely() {
        // OSC 8 hyperlink, cursor movement, a bell, a sequence cut off at the end.
        assert_eq!(
            ansi_to_html(
                "\u{1b}]8;;https://x/\u{1b}\\link\u{1b}]8;;\u{1b}\\ \u{1b}[3Aup\u{7}\u{1b}[3"
            ),
            "link up"
        );
        assert_eq!(
            ansi_to_html("\u{1b}[31m<script>\"'&</script>"),
            "<span class=\"ansi-red\">&lt;script&gt;&quot;&#39;&amp;&lt;/script&gt;</span>"
        );
        assert_eq!(ansi_to_html("a\tb\r\nc\u{0}\u{8}"), "a\tb\r\nc");
        assert_eq!(ansi_to_html("\u{1b}[31m\u{1b}[0m"), "");
    }

    /// Every class the converter can write is styled by static/ansi.css, with the xterm
    /// palette's colour for 16-255.
    #[test]
    fn stylesheet_covers_every_class() {
        let css = include_str!("../../static/ansi.css");
        for c in 0..=255u8 {
            for style in [
                Style {
                    fg: Some(c),
                    ..Style::default()
                },
                Style {
                    bg: Some(c),
                    ..Style::default()
                },
            ] {
                for class in style.classes() {
                    assert!(
                        css.contains(&format!(".{class} ")) || css.contains(&format!(".{class},")),
                        "{class}"
                    );
                }
            }
            if c >= 16 {
                let (r, g, b) = if c >= 232 {
                    let v = 8 + 10 * (c - 232);
                    (v, v, v)
                } else {
                    let i = (c - 16) as usize;
                    (CUBE[i / 36], CUBE[i / 6 % 6], CUBE[i % 6])
                };
                let hex = format!("#{r:02x}{g:02x}{b:02x}");
                assert!(
                    css.contains(&format!(".ansi-fg-{c} {{ color: {hex}; }}")),
                    "{c}"
                );
                assert!(
                    css.contains(&format!(".ansi-bg-{c} {{ background: {hex}; }}")),
                    "{c}"
                );
                assert_eq!(nearest_palette(r, g, b), c, "{hex}");
            }
        }
        for class in ["ansi-bold", "ansi-faint", "ansi-italic", "ansi-underline"] {
            assert!(css.contains(&format!(".{class} ")), "{class}");
        }
    }
}
