//! Redirect status codes: which ones a `RequestRedirect` filter may carry (the Gateway API allows
//! 301, 302, 303, 307 and 308) and which one applies when none is given. The translator refuses any
//! other code in an HTTPRoute; the router refuses a snapshot that carries one.

/// Redirect status codes a snapshot may carry.
pub const REDIRECT_STATUS_CODES: [u16; 5] = [301, 302, 303, 307, 308];

/// Redirect status when the route gives none (and in a snapshot, status code `0`).
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;

/// Whether `code` is a redirect status a snapshot may carry.
pub fn is_redirect_status(code: u16) -> bool {
    REDIRECT_STATUS_CODES.contains(&code)
}

/// The status a redirect with snapshot field `status_code` answers with: `0` means the default,
/// any other code must be one of [`REDIRECT_STATUS_CODES`] (`None` when it is not).
pub fn effective_redirect_status(status_code: u16) -> Option<u16> {
    match status_code {
        0 => Some(DEFAULT_REDIRECT_STATUS),
        c if is_redirect_status(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_api_redirect_codes_are_accepted() {
        for c in [301, 302, 303, 307, 308] {
            assert_eq!(effective_redirect_status(c), Some(c));
        }
        assert_eq!(effective_redirect_status(0), Some(302));
        for c in [200, 300, 304, 305, 306, 309, 404] {
            assert_eq!(effective_redirect_status(c), None, "{c}");
        }
    }
}
