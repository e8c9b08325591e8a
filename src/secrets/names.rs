//! Which variable names and values a member may set.

/// A value's limit: secrets are keys and tokens, not files.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
const MAX_NAME_LEN: usize = 128;

/// Names Notebox sets itself (its own, Jupyter's, the GPU visibility variables): a
/// member's variable of the same name could break the start or reach GPUs the notebook
/// was not given.
const RESERVED: &[&str] = &[
    "NOTEBOX",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
];
const RESERVED_PREFIXES: &[&str] = &["NOTEBOX_", "JUPYTER_", "NVIDIA_"];

/// Names whose value decides what runs or where it is found: set for every notebook,
/// a wrong one stops Jupyter from starting at all. Set them inside the notebook instead.
const DANGEROUS: &[&str] = &["PATH", "HOME", "PYTHONHOME", "SHELL", "USER"];
const DANGEROUS_PREFIXES: &[&str] = &["LD_"];

/// A name like a shell variable's: a letter or underscore, then letters, digits and
/// underscores, at most 128 characters; not one Notebox sets itself or one that would
/// stop notebooks from starting.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "The name {:?} is not a variable name: use letters, digits and underscores, \
             starting with a letter or an underscore (like OPENAI_API_KEY).",
            shorten(name)
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "The name is {} characters long; at most {MAX_NAME_LEN} are allowed.",
            name.len()
        ));
    }
    let upper = name.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) || RESERVED_PREFIXES.iter().any(|p| upper.starts_with(p))
    {
        return Err(format!(
            "{name} is set by Notebox itself (names starting with NOTEBOX_, JUPYTER_ or \
             NVIDIA_, and the GPU visibility variables, are reserved): choose another name."
        ));
    }
    if DANGEROUS.contains(&upper.as_str())
        || DANGEROUS_PREFIXES.iter().any(|p| upper.starts_with(p))
    {
        return Err(format!(
            "{name} cannot be set for all your notebooks (PATH, HOME, PYTHONHOME, SHELL, USER \
             and LD_* decide what runs; a wrong value stops Jupyter from starting): set it \
             inside the notebook instead."
        ));
    }
    Ok(())
}

/// At most 32 KiB, and no NUL character (an environment cannot hold one).
pub fn check_variable_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "The value is {} bytes long; at most {MAX_VALUE_BYTES} (32 KiB) are allowed: put \
             larger things in a file under /storage.",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(
            "The value contains a NUL character, which an environment variable cannot hold.".into(),
        );
    }
    Ok(())
}

/// A name as an error message quotes it: the first 40 characters.
fn shorten(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &name[..i]),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_a_shells_are_taken() {
        for ok in [
            "OPENAI_API_KEY",
            "_x",
            "a1",
            "HF_TOKEN",
            "PYTHONPATH",
            "LDX",
        ] {
            assert_eq!(check_variable_name(ok), Ok(()), "{ok}");
        }
        let long = "A".repeat(129);
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "A=B",
            "É",
            "A\0",
            &long,
            "JUPYTER_TOKEN",
            "jupyter_token",
            "NOTEBOX",
            "NOTEBOX_NOTEBOOK_ID",
            "NVIDIA_VISIBLE_DEVICES",
            "CUDA_VISIBLE_DEVICES",
            "JUPYTER_RUNTIME_DIR",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PATH",
            "HOME",
        ] {
            let e = check_variable_name(bad).expect_err(bad);
            assert!(!e.is_empty());
        }
        assert_eq!(check_variable_name(&"A".repeat(128)), Ok(()));
    }

    #[test]
    fn values_are_bounded_and_have_no_nul() {
        assert!(check_variable_value("").is_ok());
        assert!(check_variable_value("line\nline = é").is_ok());
        assert!(check_variable_value(&"x".repeat(MAX_VALUE_BYTES)).is_ok());
        assert!(check_variable_value(&"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(check_variable_value("a\0b").is_err());
    }
}
