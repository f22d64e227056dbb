//! The gateway's one client-facing error type and its mapping to OpenAI-shaped HTTP answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::{
    policy::LimitExceeded,
    server::body::{self, Body},
};

/// Everything that can end a request with an error answer.
///
/// Variants carry only what is safe to show a client; the detail that
/// explains an upstream failure goes to the log where it happens.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must contain a string field `model`")]
    MissingModel,
    #[error("could not read the request body")]
    BodyRead,
    #[error("incorrect or missing API key")]
    Unauthorized,
    #[error("the admin API is disabled: no admin token is configured ([admin] token_env)")]
    AdminDisabled,
    #[error("{0}")]
    BadRequest(String),
    #[error("the model `{0}` does not exist or is not served here")]
    UnknownModel(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the gateway is at its concurrency limit; retry shortly")]
    Overloaded,
    #[error("upstream rate limit reached; retry shortly")]
    UpstreamRateLimited,
    #[error("no upstream is available for model `{0}`")]
    NoUpstream(String),
    /// A key's requests-, tokens-per-minute or daily budget; its own headers and body.
    #[error(transparent)]
    RateLimited(Box<LimitExceeded>),
    #[error(
        "no endpoint for model `{model}` is available in the regions this API key is restricted to ({residency}); the request was not sent elsewhere"
    )]
    ResidencyUnavailable { model: String, residency: String },
    #[error("the upstream failed to answer")]
    UpstreamFailed,
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
    #[error("capacity is exhausted and the overflow spend cap is reached; retry later")]
    SpendCapReached { retry_after_secs: u64 },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::MissingModel | Self::BodyRead | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized | Self::AdminDisabled => StatusCode::UNAUTHORIZED,
            Self::UnknownModel(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamRateLimited | Self::RateLimited(_) | Self::SpendCapReached { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Overloaded | Self::NoUpstream(_) | Self::ResidencyUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The OpenAI `type` and `code` strings SDKs and users key on.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => ("invalid_request_error", "invalid_json"),
            Self::MissingModel => ("invalid_request_error", "missing_model"),
            Self::BodyRead => ("invalid_request_error", "invalid_body"),
            Self::Unauthorized => ("authentication_error", "invalid_api_key"),
            Self::AdminDisabled => ("authentication_error", "admin_disabled"),
            Self::BadRequest(_) => ("invalid_request_error", "invalid_parameter"),
            Self::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
            Self::NotFound(_) => ("invalid_request_error", "not_found"),
            Self::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            Self::Overloaded => ("server_error", "overloaded"),
            Self::UpstreamRateLimited => ("rate_limit_error", "rate_limit_exceeded"),
            Self::NoUpstream(_) => ("server_error", "no_upstream_available"),
            Self::RateLimited(e) => e.kind_and_code(),
            Self::ResidencyUnavailable { .. } => ("server_error", "residency_unavailable"),
            Self::UpstreamFailed => ("server_error", "upstream_error"),
            Self::UpstreamTimeout => ("server_error", "upstream_timeout"),
            Self::SpendCapReached { .. } => ("rate_limit_error", "spend_cap_reached"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Self::MissingModel | Self::UnknownModel(_) => Some("model"),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying, for the statuses that invite it.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Overloaded
            | Self::NoUpstream(_)
            | Self::UpstreamRateLimited
            | Self::ResidencyUnavailable { .. } => Some(1),
            Self::SpendCapReached { retry_after_secs } => Some((*retry_after_secs).max(1)),
            _ => None,
        }
    }

    /// The OpenAI error object `{"error":{...}}` as JSON bytes.
    pub fn to_json(&self) -> Bytes {
        let (kind, code) = self.kind();
        let body = json!({
            "error": {
                "message": self.to_string(),
                "type": kind,
                "param": self.param(),
                "code": code,
            }
        });
        Bytes::from(body.to_string())
    }

    /// A terminating SSE event for a stream that already sent its headers.
    pub fn to_sse_event(&self) -> Bytes {
        let json = self.to_json();
        let mut out = Vec::with_capacity(json.len() + 24);
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.to_json()));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::RateLimited(e) = &self {
            e.insert_headers(headers);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_openai_shaped() {
        let all = [
            ApiError::MalformedJson("x".into()),
            ApiError::MissingModel,
            ApiError::Unauthorized,
            ApiError::UnknownModel("m".into()),
            ApiError::MethodNotAllowed("GET".into()),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::Overloaded,
            ApiError::UpstreamRateLimited,
            ApiError::NoUpstream("m".into()),
            ApiError::UpstreamFailed,
            ApiError::UpstreamTimeout,
            ApiError::SpendCapReached {
                retry_after_secs: 5,
            },
        ];
        for e in all {
            let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
            let obj = v["error"].as_object().unwrap();
            for key in ["message", "type", "param", "code"] {
                assert!(obj.contains_key(key), "{e:?} lacks {key}");
            }
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
    }

    #[test]
    fn sse_error_event_is_one_complete_event() {
        let ev = ApiError::UpstreamTimeout.to_sse_event();
        let s = std::str::from_utf8(&ev).unwrap();
        assert!(s.starts_with("event: error\ndata: {\"error\":"));
        assert!(s.ends_with("\n\n"));
    }
}
