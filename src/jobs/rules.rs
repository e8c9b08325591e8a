//! What a job request must be: a notebook file path or a command, parameters papermill
//! can inject, a time limit within the lab's, a notebook the runner can execute. Pure
//! functions, each refusal saying what to fix.

use std::time::Duration;

use serde_json::{Map, Value};

use super::JobError;
use crate::config::JobsConfig;

/// The most parameters one job takes.
const MAX_PARAMETERS: usize = 100;
/// Their total size, as JSON.
const MAX_PARAMETERS_BYTES: usize = 64 * 1024;
/// The most arguments of a command, and the longest one.
const MAX_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 4096;

/// A notebook path relative to the notebook's folder ("train.ipynb", "exp/run.ipynb");
/// "/notebooks/" in front is accepted.
pub fn check_path(path: &str) -> Result<String, JobError> {
    let trimmed = path.trim();
    let relative = trimmed
        .strip_prefix("/notebooks/")
        .or_else(|| trimmed.strip_prefix("./"))
        .unwrap_or(trimmed);
    if !relative.to_ascii_lowercase().ends_with(".ipynb") {
        return Err(JobError::Invalid(format!(
            "'{}' is not a notebook: a job runs a .ipynb file, or a \"command\".",
            clip(trimmed)
        )));
    }
    let fine = relative.len() <= 1024
        && !relative.starts_with('/')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.contains(['\\', '\0']));
    if !fine {
        return Err(JobError::Invalid(format!(
            "'{}' is not a path inside the notebook's folder (relative, no hidden or '..' parts).",
            clip(trimmed)
        )));
    }
    Ok(relative.to_string())
}

/// A command as a list of arguments (no shell).
pub fn check_command(command: &[String]) -> Result<Vec<String>, JobError> {
    if command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(JobError::Invalid(
            "\"command\" is empty: give the program and its arguments, e.g. [\"python\", \"train.py\"]."
                .into(),
        ));
    }
    if command.len() > MAX_ARGS {
        return Err(JobError::Invalid(format!(
            "The command has {} arguments; a job takes at most {MAX_ARGS}.",
            command.len()
        )));
    }
    if let Some(bad) = command
        .iter()
        .find(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        return Err(JobError::Invalid(format!(
            "The argument '{}' is over {MAX_ARG_BYTES} bytes or holds a NUL character.",
            clip(bad)
        )));
    }
    Ok(command.to_vec())
}

/// Parameters: names a Python variable can have, values any JSON, within limits.
pub fn check_parameters(parameters: &Map<String, Value>) -> Result<(), JobError> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(JobError::Invalid(format!(
            "{} parameters; a job takes at most {MAX_PARAMETERS}.",
            parameters.len()
        )));
    }
    if let Some(bad) = parameters.keys().find(|k| !is_identifier(k)) {
        return Err(JobError::Invalid(format!(
            "'{}' cannot be a parameter: a name is letters, digits and '_', not starting with a digit, and not a Python keyword.",
            clip(bad)
        )));
    }
    let size = serde_json::to_string(parameters).map_or(usize::MAX, |s| s.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(JobError::Invalid(format!(
            "The parameters take {size} bytes as JSON; at most {MAX_PARAMETERS_BYTES}."
        )));
    }
    Ok(())
}

/// Python's keywords (and soft keywords a parameter cell could not assign cleanly).
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    !PYTHON_KEYWORDS.contains(&name)
        && name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The time limit asked for ("2h", "90m"), or the lab's default; within `max_time_limit`.
pub fn time_limit(asked: Option<&str>, config: &JobsConfig) -> Result<Duration, JobError> {
    let Some(text) = asked.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(config.default_time_limit);
    };
    let limit = humantime::parse_duration(text).map_err(|e| {
        JobError::Invalid(format!(
            "\"time_limit\" '{}' is not a duration ({e}); write e.g. \"90m\" or \"2h\".",
            clip(text)
        ))
    })?;
    if limit < Duration::from_secs(1) || limit > config.max_time_limit {
        return Err(JobError::Invalid(format!(
            "\"time_limit\" must be between 1s and {} here.",
            humantime::format_duration(config.max_time_limit)
        )));
    }
    Ok(limit)
}

/// What to do with a scheduled run when the previous one is still going.
pub fn check_overlap(overlap: Option<&str>) -> Result<String, JobError> {
    match overlap.map(str::trim).unwrap_or("skip") {
        "" | "skip" => Ok("skip".into()),
        "queue" => Ok("queue".into()),
        other => Err(JobError::Invalid(format!(
            "\"overlap\" '{}' is not known: use \"skip\" (the default) or \"queue\".",
            clip(other)
        ))),
    }
}

/// Checks that the bytes are a notebook the runner can execute; its code cells.
pub fn inspect_notebook(bytes: &[u8], path: &str, max_cells: u32) -> Result<i64, JobError> {
    #[derive(serde::Deserialize)]
    struct Cell<'a> {
        #[serde(borrow)]
        cell_type: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    struct Shape<'a> {
        nbformat: Option<i64>,
        #[serde(borrow)]
        cells: Option<Vec<Cell<'a>>>,
    }
    let not_a_notebook = |why: &str| {
        JobError::Invalid(format!(
            "'{}' is not a Jupyter notebook the job can run: {why}.",
            clip(path)
        ))
    };
    let nb: Shape = serde_json::from_slice(bytes)
        .map_err(|e| not_a_notebook(&format!("not JSON of a notebook ({e})")))?;
    if nb.nbformat != Some(4) {
        return Err(not_a_notebook("only nbformat 4 notebooks run as jobs"));
    }
    let cells = nb
        .cells
        .ok_or_else(|| not_a_notebook("it has no list of cells"))?;
    let code = cells
        .iter()
        .filter(|c| c.cell_type.as_deref() == Some("code"))
        .count() as i64;
    if code > i64::from(max_cells) {
        return Err(JobError::Invalid(format!(
            "'{}' has {code} code cells; a job runs at most {max_cells} (jobs.max_cells).",
            clip(path)
        )));
    }
    Ok(code)
}

/// At most 80 characters of what a member sent, for a message.
fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        assert_eq!(check_path("train.ipynb").ok(), Some("train.ipynb".into()));
        assert_eq!(
            check_path("/notebooks/a/b.ipynb").ok(),
            Some("a/b.ipynb".into())
        );
        for bad in [
            "../x.ipynb",
            "/etc/x.ipynb",
            "a/.hidden.ipynb",
            "x.py",
            "a//b.ipynb",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parameters_are_python_names() {
        let ok: Map<String, Value> = serde_json::from_str(r#"{"lr": 0.1, "_x2": [1]}"#).unwrap();
        assert!(check_parameters(&ok).is_ok());
        let bad: Map<String, Value> = serde_json::from_str(r#"{"2x": 1}"#).unwrap();
        assert!(check_parameters(&bad).is_err());
        let bad: Map<String, Value> = serde_json::from_str(r#"{"a; import os": 1}"#).unwrap();
        assert!(check_parameters(&bad).is_err());
        let bad: Map<String, Value> = serde_json::from_str(r#"{"import": 1}"#).unwrap();
        assert!(check_parameters(&bad).is_err());
    }

    #[test]
    fn notebooks_are_checked_before_they_queue() {
        let nb = br#"{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
            {"cell_type": "code", "source": "1", "metadata": {}, "outputs": []},
            {"cell_type": "markdown", "source": "x", "metadata": {}}]}"#;
        assert_eq!(inspect_notebook(nb, "a.ipynb", 10).ok(), Some(1));
        assert!(inspect_notebook(nb, "a.ipynb", 0).is_err());
        assert!(inspect_notebook(b"{", "a.ipynb", 10).is_err());
        assert!(inspect_notebook(br#"{"nbformat": 3}"#, "a.ipynb", 10).is_err());
    }

    #[test]
    fn time_limits_within_the_labs() {
        let config = JobsConfig::default();
        assert_eq!(
            time_limit(Some("2h"), &config).ok(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            time_limit(None, &config).ok(),
            Some(config.default_time_limit)
        );
        assert!(time_limit(Some("30d"), &config).is_err());
        assert!(time_limit(Some("soon"), &config).is_err());
    }
}
