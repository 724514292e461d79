//! The bearer token a client sends: from a file when one is named, else
//! from `$TREECTL_TOKEN`. One reader for pulls, pushes and publishes.

use std::path::Path;

use crate::error::TransportError;

/// The environment variable that holds a token when no file is given.
pub const TOKEN_ENV: &str = "TREECTL_TOKEN";

/// The token in `file` (trimmed) if given, else `$TREECTL_TOKEN`; `None`
/// when neither gives one. A file that is empty or only whitespace is an
/// error naming it: the user asked for a token and would silently send
/// none. An empty or blank variable counts as unset.
pub fn read_token(file: Option<&Path>) -> Result<Option<String>, TransportError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(TransportError::io("reading the token file", path))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TransportError::EmptyToken {
                path: path.to_owned(),
            });
        }
        return Ok(Some(token.to_owned()));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn files_are_trimmed_and_blank_files_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        std::fs::write(&good, "s3cret\n").expect("write");
        assert_eq!(
            read_token(Some(&good)).expect("read").as_deref(),
            Some("s3cret")
        );
        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n\t").expect("write");
        let err = read_token(Some(&blank)).expect_err("blank");
        assert_eq!(
            err.to_string(),
            format!("the token file {} is empty", blank.display())
        );
        assert_eq!(err.class(), ErrorClass::Local);
        let missing = dir.path().join("missing");
        let err = read_token(Some(&missing)).expect_err("missing");
        assert!(err
            .chain_text()
            .starts_with(&format!("reading the token file {}: ", missing.display())));
    }
}
