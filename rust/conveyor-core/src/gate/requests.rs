//! What a client sends and how the gate refuses it: the request shapes,
//! the refusal (status, stable code, reason), the bearer token check, and
//! turning one posted job into an envelope and its topic.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::access::{Denied, Granted};
use super::{read, Gate};
use crate::envelope::{validate_job_type, Envelope, MAX_SCHEDULE_AHEAD_US};
use crate::error::Error;
use crate::id::now_us;
use crate::payload::{check_json, check_size, write_call, NO_ARGS, NO_KWARGS};

/// One job as a client posts it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobRequest<'a> {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default, borrow)]
    kwargs: Option<&'a RawValue>,
    dedup_key: Option<String>,
    /// Seconds from now.
    delay: Option<f64>,
    /// Seconds since the epoch.
    run_at: Option<f64>,
    trace_context: Option<String>,
    pub(super) partition: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchRequest<'a> {
    #[serde(borrow)]
    pub(super) jobs: Vec<JobRequest<'a>>,
}

/// A refusal: status, stable code, reason, and the job's index in a batch.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    code: &'static str,
    reason: String,
    pub(super) index: Option<usize>,
}

impl Refusal {
    pub(super) fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_job",
            reason: reason.into(),
            index: None,
        }
    }

    /// 403: outside the token's scope.
    pub(super) fn forbidden(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            reason: reason.into(),
            index: None,
        }
    }

    /// 404: no such job, or one out of the token's scope (told apart by nobody).
    pub(super) fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            reason: reason.into(),
            index: None,
        }
    }

    pub(super) fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Self {
        let status = match &err {
            Error::InvalidJob(_) | Error::Decode(_) | Error::UnsupportedVersion { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            code: err.code(),
            reason: err.to_string(),
            index: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.reason, "code": self.code});
        if let Some(index) = self.index {
            body["index"] = json!(index);
        }
        let mut response = (self.status, json_body(&body)).into_response();
        if matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub(super) fn json_body(value: &Value) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

impl Gate {
    /// The grant of the request's bearer token (`None`: the gate is open).
    pub(super) fn authorize(
        &self,
        headers: &HeaderMap,
    ) -> std::result::Result<Option<Arc<Granted>>, Refusal> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        self.access.admit(bearer).map_err(|denied| match denied {
            Denied::Unauthenticated => Refusal {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                reason: "missing or wrong bearer token".to_owned(),
                index: None,
            },
            Denied::RateLimited => Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                reason: "over this token's request rate".to_owned(),
                index: None,
            },
        })
    }

    /// Turns a request into an envelope and the topic it goes to.
    /// A token's scope is checked on the type's name first and on its queue
    /// before its existence: out of scope is 403 whether it exists or not.
    pub(super) fn envelope(
        &self,
        job: JobRequest<'_>,
        grant: Option<&Granted>,
    ) -> std::result::Result<(String, Envelope), Refusal> {
        validate_job_type(&job.job_type).map_err(Refusal::from)?;
        let queue = read(&self.registry).get(&job.job_type).cloned();
        if let Some(granted) = grant {
            let scope = &granted.grant;
            if !scope.allows_type(&job.job_type) || !scope.allows_queue(queue.as_deref()) {
                return Err(Refusal::forbidden(format!(
                    "job type {:?} is outside this token's scope",
                    job.job_type
                )));
            }
        }
        let queue = queue.ok_or_else(|| Refusal {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "unknown_type",
            reason: format!(
                "unknown job type {:?}: no worker or route registered it",
                job.job_type
            ),
            index: None,
        })?;
        let args = raw_or(job.args, NO_ARGS, '[', "args must be a JSON array")?;
        let kwargs = raw_or(job.kwargs, NO_KWARGS, '{', "kwargs must be a JSON object")?;
        // What a worker could not decode is refused here, not dead-lettered later.
        check_json(args.as_bytes()).map_err(Refusal::from)?;
        check_json(kwargs.as_bytes()).map_err(Refusal::from)?;
        // The caller's JSON bytes go through as they are: never re-encoded.
        let mut payload = Vec::with_capacity(args.len() + kwargs.len() + 20);
        write_call(
            &mut payload,
            usize::MAX,
            |out| {
                out.extend_from_slice(args.as_bytes());
                Ok(())
            },
            |out| {
                out.extend_from_slice(kwargs.as_bytes());
                Ok(())
            },
        )
        .map_err(Refusal::from)?;
        check_size(payload.len(), self.config.max_payload_bytes).map_err(|e| Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            reason: e.to_string(),
            index: None,
        })?;
        let ahead_s = MAX_SCHEDULE_AHEAD_US as f64 / 1e6;
        let now = now_us();
        let run_at_us = match (job.delay, job.run_at) {
            (Some(_), Some(_)) => return Err(Refusal::bad("give delay or run_at, not both")),
            // Bounded before any arithmetic: a huge delay must neither wrap
            // around to "now" nor park a job for ever.
            (Some(d), None) if (0.0..=ahead_s).contains(&d) => Some(now + (d * 1e6) as u64),
            (None, Some(t)) if t.is_finite() && t >= 0.0 && t <= now as f64 / 1e6 + ahead_s => {
                Some((t * 1e6) as u64)
            }
            (None, None) => None,
            _ => {
                return Err(Refusal::bad(format!(
                    "delay must be 0 to {ahead_s:.0} seconds (366 days), and run_at a time \
                     in seconds since the epoch no more than 366 days ahead"
                )))
            }
        };
        if job.partition.is_some_and(|p| p < 0) {
            return Err(Refusal::bad("partition must not be negative"));
        }
        let envelope = Envelope::new_job(
            job.job_type,
            payload,
            job.dedup_key,
            run_at_us,
            job.trace_context,
        );
        envelope.validate().map_err(Refusal::from)?;
        Ok((self.config.topic_for(&queue), envelope))
    }
}

fn raw_or<'a>(
    raw: Option<&'a RawValue>,
    default: &'static [u8],
    opener: char,
    message: &str,
) -> std::result::Result<&'a str, Refusal> {
    match raw {
        // The defaults are ASCII JSON.
        None => Ok(std::str::from_utf8(default).unwrap_or_default()),
        Some(raw) if raw.get().trim_start().starts_with(opener) => Ok(raw.get()),
        Some(_) => Err(Refusal::bad(message)),
    }
}

/// The headers and body of a request whose body may be at most `limit`
/// bytes: a body announced (by `Content-Length`) over it is refused at once,
/// before a byte of it is read, and one that turns out longer as soon as it
/// passes the limit.
pub(super) async fn read_body(
    request: Request,
    limit: usize,
    timeout: std::time::Duration,
) -> std::result::Result<(HeaderMap, Bytes), Refusal> {
    let too_large = || Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "too_large",
        reason: format!("request body over this route's limit of {limit} bytes"),
        index: None,
    };
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| Refusal {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "body_timeout",
            reason: format!("request body not received within {timeout:?}"),
            index: None,
        })?
        .map_err(|_| too_large())?;
    Ok((parts.headers, bytes))
}

pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> std::result::Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::bad(format!("malformed request: {e}")))
}
