//! How limits show on the wire: OpenAI's `x-ratelimit-*` headers, `Retry-After`, and the 429 body.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::limit::{LimitExceeded, LimitKind, Rate, Rates};

pub const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub const REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
pub const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
pub const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
pub const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
/// The OpenAI SDKs read this before `Retry-After` for sub-second precision.
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// A duration the way OpenAI writes resets: `20ms`, `1s`, `1.5s`, `6m0s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let minutes = ms / 60_000;
    let rest_ms = ms % 60_000;
    let secs = if rest_ms.is_multiple_of(1000) {
        format!("{}s", rest_ms / 1000)
    } else {
        let s = format!("{:.3}", rest_ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0'))
    };
    if minutes > 0 {
        format!("{minutes}m{secs}")
    } else {
        secs
    }
}

fn number(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn text(s: String) -> HeaderValue {
    // Only digits, letters and '.' are ever formatted here.
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("0s"))
}

fn insert_rate(headers: &mut HeaderMap, names: [HeaderName; 3], rate: &Rate) {
    let [limit, remaining, reset] = names;
    headers.insert(limit, number(rate.limit));
    headers.insert(remaining, number(rate.remaining));
    headers.insert(reset, text(format_reset(rate.reset)));
}

/// Adds the `x-ratelimit-*` headers for the limits the key has.
pub fn insert_rate_headers(headers: &mut HeaderMap, rates: &Rates) {
    if let Some(r) = &rates.requests {
        insert_rate(
            headers,
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
            r,
        );
    }
    if let Some(r) = &rates.tokens {
        insert_rate(headers, [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS], r);
    }
}

impl LimitExceeded {
    /// OpenAI's error `type` and `code`: a budget is a quota, the rest are rate limits.
    pub fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self.kind {
            LimitKind::Budget => ("insufficient_quota", "insufficient_quota"),
            LimitKind::Requests | LimitKind::Tokens => {
                ("rate_limit_exceeded", "rate_limit_exceeded")
            }
        }
    }

    /// `Retry-After` in whole seconds, rounded up so a client never comes back early.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }

    /// `Retry-After`, `retry-after-ms` and the rate headers of a 429.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::RETRY_AFTER, number(self.retry_after_secs()));
        headers.insert(
            RETRY_AFTER_MS,
            number(u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX)),
        );
        insert_rate_headers(headers, &self.rates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceeded(kind: LimitKind, retry_ms: u64) -> LimitExceeded {
        LimitExceeded {
            kind,
            retry_after: Duration::from_millis(retry_ms),
            limit: 10,
            remaining: 0,
            reset: Duration::from_secs(61),
            requested: 1,
            rates: Rates {
                requests: Some(Rate {
                    limit: 10,
                    remaining: 0,
                    reset: Duration::from_millis(61_000),
                }),
                tokens: Some(Rate {
                    limit: 5000,
                    remaining: 1234,
                    reset: Duration::from_millis(1500),
                }),
            },
        }
    }

    #[test]
    fn resets_are_formatted_like_openai() {
        for (ms, want) in [
            (0, "0ms"),
            (20, "20ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (59_999, "59.999s"),
            (360_000, "6m0s"),
            (61_000, "1m1s"),
            (86_400_000, "1440m0s"),
        ] {
            assert_eq!(format_reset(Duration::from_millis(ms)), want);
        }
    }

    #[test]
    fn a_429_carries_retry_after_and_every_rate_header() {
        let mut h = HeaderMap::new();
        exceeded(LimitKind::Requests, 2001).insert_headers(&mut h);
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("retry-after"), "3");
        assert_eq!(get("retry-after-ms"), "2001");
        assert_eq!(get("x-ratelimit-limit-requests"), "10");
        assert_eq!(get("x-ratelimit-remaining-requests"), "0");
        assert_eq!(get("x-ratelimit-reset-requests"), "1m1s");
        assert_eq!(get("x-ratelimit-limit-tokens"), "5000");
        assert_eq!(get("x-ratelimit-remaining-tokens"), "1234");
        assert_eq!(get("x-ratelimit-reset-tokens"), "1.5s");
    }

    #[test]
    fn a_sub_second_wait_still_says_retry_after_one() {
        assert_eq!(exceeded(LimitKind::Tokens, 10).retry_after_secs(), 1);
    }

    #[test]
    fn bodies_are_openai_shaped_with_the_right_type() {
        for (kind, ty) in [
            (LimitKind::Requests, "rate_limit_exceeded"),
            (LimitKind::Tokens, "rate_limit_exceeded"),
            (LimitKind::Budget, "insufficient_quota"),
        ] {
            let e = exceeded(kind, 1000);
            let v: serde_json::Value =
                serde_json::from_slice(&crate::error::ApiError::RateLimited(Box::new(e)).to_json())
                    .unwrap();
            assert_eq!(v["error"]["type"], ty);
            assert_eq!(v["error"]["code"], ty);
            assert!(v["error"]["param"].is_null());
            assert!(v["error"]["message"].as_str().unwrap().len() > 20);
        }
    }

    #[test]
    fn keys_without_limits_get_no_rate_headers() {
        let mut h = HeaderMap::new();
        insert_rate_headers(&mut h, &Rates::default());
        assert!(h.is_empty());
    }
}
