//! The one place the client spells the server's routes. Names are percent-encoded as
//! path segments.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

pub fn topics() -> String {
    "/v1/topics".to_string()
}

pub fn topic(name: &str) -> String {
    format!("/v1/topics/{}", seg(name))
}

/// Publishing to one topic uses its own route; to several, `/v1/events?topic=…`.
pub fn publish(topics: &[&str]) -> String {
    match topics {
        [one] => format!("/v1/topics/{}/events", seg(one)),
        many => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for t in many {
                q.append_pair("topic", t);
            }
            format!("/v1/events?{}", q.finish())
        }
    }
}

pub fn events(topic: &str) -> String {
    format!("/v1/topics/{}/events", seg(topic))
}

pub fn subject_events(topic: &str, subject: &str) -> String {
    format!("/v1/topics/{}/subjects/{}/events", seg(topic), seg(subject))
}

pub fn stream(topic: &str) -> String {
    format!("/v1/topics/{}/stream", seg(topic))
}

pub fn topic_subscriptions(topic: &str) -> String {
    format!("/v1/topics/{}/subscriptions", seg(topic))
}

pub fn subscriptions() -> String {
    "/v1/subscriptions".to_string()
}

pub fn subscription(name: &str) -> String {
    format!("/v1/subscriptions/{}", seg(name))
}

/// `/v1/subscriptions/{name}/{verb}`: pull, ack, nack, seek, secret, enable, dlq, audit.
pub fn subscription_verb(name: &str, verb: &str) -> String {
    format!("/v1/subscriptions/{}/{verb}", seg(name))
}

pub fn dlq_entry(name: &str, entry: &str) -> String {
    format!("/v1/subscriptions/{}/dlq/{}", seg(name), seg(entry))
}

pub fn redrive(name: &str) -> String {
    format!("/v1/subscriptions/{}/dlq/redrive", seg(name))
}

pub fn schemas() -> String {
    "/v1/schemas".to_string()
}

/// `/v1/schemas/{type}/{verb}`: versions, check, compatibility.
pub fn schema_verb(event_type: &str, verb: &str) -> String {
    format!("/v1/schemas/{}/{verb}", seg(event_type))
}

pub fn schema_version(event_type: &str, version: &str) -> String {
    format!("/v1/schemas/{}/versions/{}", seg(event_type), seg(version))
}

pub fn validate() -> String {
    "/v1/schemas/validate".to_string()
}

pub fn cluster() -> String {
    "/v1/cluster".to_string()
}

/// `/healthz`.
pub fn healthz() -> String {
    "/healthz".to_string()
}

pub fn readyz() -> String {
    "/readyz".to_string()
}

/// `/v1/keys`.
pub const KEYS: &str = "/v1/keys";
/// The audit log.
pub const AUDIT: &str = "/v1/audit";

/// `/v1/keys/{id}`.
pub fn key(id: &str) -> String {
    format!("/v1/keys/{}", seg(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_and_several_topics_use_the_query() {
        assert_eq!(topic("a b/c+"), "/v1/topics/a%20b%2Fc%2B");
        assert_eq!(publish(&["deals"]), "/v1/topics/deals/events");
        assert_eq!(
            publish(&["deals", "audit log"]),
            "/v1/events?topic=deals&topic=audit+log"
        );
        assert_eq!(dlq_entry("erp", "0-12"), "/v1/subscriptions/erp/dlq/0-12");
    }
}
