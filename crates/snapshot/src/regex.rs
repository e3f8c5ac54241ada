//! Regular expressions of path, header, query and gRPC matches: anchored (the whole value must
//! match), at most [`MAX_REGEX_LEN`] bytes of source and [`MAX_REGEX_SIZE`] bytes of compiled
//! program, so one tenant's expression cannot take a router's memory. The translator checks every
//! expression with [`anchored_regex`] and the router compiles it with the same function.

/// Largest compiled regular expression (bytes of the compiled program); a larger one is refused.
pub const MAX_REGEX_SIZE: usize = 1 << 20;
/// Longest regular expression source (bytes); a longer one is refused before it is compiled.
pub const MAX_REGEX_LEN: usize = 1024;

/// Why a regular expression is refused.
#[cfg(feature = "regex")]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    /// The source is longer than [`MAX_REGEX_LEN`].
    #[error("regular expression longer than {MAX_REGEX_LEN} characters")]
    TooLong,
    /// It does not parse, or its compiled program is larger than [`MAX_REGEX_SIZE`].
    #[error("{0}")]
    Invalid(String),
}

#[cfg(feature = "regex")]
/// Compiles `re` so that it must match the whole input, within the limits above.
///
/// # Errors
/// [`RegexError`] when the source is too long, does not parse or compiles too large.
pub fn anchored_regex(re: &str) -> Result<::regex::Regex, RegexError> {
    if re.len() > MAX_REGEX_LEN {
        return Err(RegexError::TooLong);
    }
    ::regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| RegexError::Invalid(e.to_string()))
}

#[cfg(all(test, feature = "regex"))]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_limited() {
        let re = anchored_regex("/api/v[0-9]+").unwrap();
        assert!(re.is_match("/api/v2"));
        assert!(!re.is_match("/x/api/v2/y"));
        assert_eq!(
            anchored_regex(&"a".repeat(MAX_REGEX_LEN + 1)).unwrap_err(),
            RegexError::TooLong
        );
        assert!(anchored_regex(&"a".repeat(MAX_REGEX_LEN)).is_ok());
        assert!(matches!(
            anchored_regex("(unclosed"),
            Err(RegexError::Invalid(_))
        ));
        assert!(matches!(
            anchored_regex(r"\w{1000}\w{1000}"),
            Err(RegexError::Invalid(_))
        ));
    }
}
