//! What can go wrong talking to a server.

use crmbus_api::Problem;

/// An error from a call to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("the server URL {0:?} must start with http:// or https://")]
    InvalidUrl(String),
    /// No answer: the connection was refused or timed out.
    #[error(
        "cannot reach the crmbus server at {url}: is `crmbus serve` running there? (set --url or CRMBUS_URL)"
    )]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed after it was sent (the connection broke, the body could not be
    /// read, …).
    #[error("request to {url} failed: {source}")]
    Request {
        /// The server's base URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server refused the request with a problem document.
    #[error("{}", problem_message(.problem))]
    Problem {
        /// The problem document: `code` says what kind of error, `errors` each violation.
        problem: Box<Problem>,
    },
    /// The server answered an error status without a problem document.
    #[error("the server answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body as text.
        body: String,
    },
    /// The server's answer is not the body the API defines for it.
    #[error("the answer to {what} is not what the API defines: {source}")]
    Decode {
        /// The route called.
        what: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// A live stream ended with the reason the server gave.
    #[error("the server ended the stream: {0}")]
    StreamEnded(String),
    /// The CA certificates given to trust are not usable.
    #[error("CA certificates: {0}")]
    InvalidCertificate(String),
}

impl ClientError {
    /// The problem's machine-readable code (`topic_not_found`, …) when the server
    /// answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem { problem } => Some(&problem.code),
            _ => None,
        }
    }

    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Problem { problem } => Some(problem.status),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `detail (HTTP status)`, then one line per violation the detail does not already say.
fn problem_message(p: &Problem) -> String {
    let mut msg = format!("{} (HTTP {})", p.detail, p.status);
    for e in &p.errors {
        let line = format!("{}: {}", e.field, e.message);
        if !p.detail.contains(&line) {
            msg.push_str(&format!("\n  {line}"));
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmbus_api::FieldError;

    #[test]
    fn a_problem_reads_as_its_detail_status_and_violations() {
        let e = ClientError::Problem {
            problem: Box::new(Problem {
                ty: "urn:crmbus:problem:invalid_event".into(),
                title: "Bad Request".into(),
                status: 400,
                detail: "the event is not valid: id".into(),
                code: "invalid_event".into(),
                errors: vec![FieldError {
                    field: "id".into(),
                    message: "missing".into(),
                }],
                current_version: None,
            }),
        };
        assert_eq!(
            e.to_string(),
            "the event is not valid: id (HTTP 400)\n  id: missing"
        );
        assert_eq!(e.code(), Some("invalid_event"));

        // A violation the detail already quotes is not said again.
        let said = ClientError::Problem {
            problem: Box::new(Problem {
                ty: "urn:crmbus:problem:schema_incompatible".into(),
                title: "Conflict".into(),
                status: 409,
                detail: "breaks compatibility: /properties/a/type: narrowed".into(),
                code: "schema_incompatible".into(),
                errors: vec![FieldError {
                    field: "/properties/a/type".into(),
                    message: "narrowed".into(),
                }],
                current_version: None,
            }),
        };
        assert_eq!(
            said.to_string(),
            "breaks compatibility: /properties/a/type: narrowed (HTTP 409)"
        );
        assert_eq!(e.status(), Some(400));
    }
}
