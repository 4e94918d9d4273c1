//! Which key each route needs: one rule per route (method and path template), written
//! out here for every route the router has. A route without a rule needs `admin` (the
//! safe side), and a test checks that every documented route has one.

use super::scope::Permission;

/// What a kind of topic access a rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `publish:<topic>`.
    Publish,
    /// `subscribe:<topic>`.
    Subscribe,
    /// `dlq:<topic>`.
    Dlq,
}

impl Access {
    /// The permission of this access to `topic`.
    pub fn on(self, topic: &str) -> Permission {
        match self {
            Access::Publish => Permission::Publish(topic.to_string()),
            Access::Subscribe => Permission::Subscribe(topic.to_string()),
            Access::Dlq => Permission::Dlq(topic.to_string()),
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nothing: health, readiness and the API document.
    Open,
    /// Any valid key.
    AnyKey,
    /// `admin`.
    Admin,
    /// An access to the topic in the path (`{topic}`).
    Topic(Access),
    /// An access to the topic of the subscription in the path (`{name}`).
    Subscription(Access),
    /// Publishing to every topic the query names (`?topic=a&topic=b`).
    QueryTopics,
}

/// The rule of a route: `method` (upper case) and its path template as the router has
/// it; `None` for a route this table does not know.
pub fn rule_for(method: &str, template: &str) -> Option<Rule> {
    use Access::*;
    use Rule::*;
    Some(match (method, template) {
        ("GET", "/healthz" | "/readyz" | "/openapi.json") => Open,
        // The console's page and assets: no data (the page asks the API with its key).
        ("GET", "/" | "/console/{file}") => Open,
        ("GET", "/metrics" | "/v1/cluster" | "/v1/whoami") => AnyKey,
        ("GET", "/v1/topics") => AnyKey,
        ("POST", "/v1/topics") => Admin,
        ("GET", "/v1/topics/{topic}") => Topic(Subscribe),
        ("DELETE", "/v1/topics/{topic}") => Admin,
        ("POST", "/v1/topics/{topic}/events") => Topic(Publish),
        ("GET", "/v1/topics/{topic}/events") => Topic(Subscribe),
        ("GET", "/v1/topics/{topic}/subjects/{subject}/events") => Topic(Subscribe),
        ("POST", "/v1/events") => QueryTopics,
        ("GET", "/v1/topics/{topic}/stream" | "/v1/topics/{topic}/ws") => Topic(Subscribe),
        ("POST", "/v1/topics/{topic}/stream-token") => Topic(Subscribe),
        ("POST", "/v1/topics/{topic}/subscriptions") => Admin,
        ("GET", "/v1/subscriptions") => AnyKey,
        ("GET", "/v1/subscriptions/{name}") => Subscription(Subscribe),
        ("DELETE", "/v1/subscriptions/{name}") => Admin,
        (
            "POST",
            "/v1/subscriptions/{name}/pull"
            | "/v1/subscriptions/{name}/ack"
            | "/v1/subscriptions/{name}/nack"
            | "/v1/subscriptions/{name}/seek",
        ) => Subscription(Subscribe),
        ("PUT", "/v1/subscriptions/{name}/secret") => Admin,
        ("POST", "/v1/subscriptions/{name}/enable") => Admin,
        ("GET", "/v1/subscriptions/{name}/dlq" | "/v1/subscriptions/{name}/audit") => {
            Subscription(Dlq)
        }
        ("POST", "/v1/subscriptions/{name}/dlq/redrive") => Subscription(Dlq),
        ("GET" | "DELETE", "/v1/subscriptions/{name}/dlq/{entry}") => Subscription(Dlq),
        ("GET", "/v1/schemas" | "/v1/schemas/{type}/versions/{version}") => AnyKey,
        ("POST", "/v1/schemas/validate" | "/v1/schemas/{type}/check") => AnyKey,
        ("POST", "/v1/schemas/{type}/versions") => Admin,
        ("PUT", "/v1/schemas/{type}/compatibility") => Admin,
        ("GET" | "POST", "/v1/keys") => Admin,
        ("DELETE", "/v1/keys/{id}") => Admin,
        ("GET", "/v1/audit") => Admin,
        _ => return None,
    })
}

/// Whether a request to the route goes into the audit log when it succeeds: every change
/// an admin key makes (topics, subscriptions, schemas, keys), every dead-letter redrive
/// and discard, a subscription's seek (it replays or skips events), and every live-stream
/// token issued (a credential).
pub fn audited(method: &str, template: &str) -> bool {
    if matches!(method, "GET" | "HEAD") {
        return false;
    }
    matches!(
        (method, template),
        ("POST", "/v1/subscriptions/{name}/seek") | ("POST", "/v1/topics/{topic}/stream-token")
    ) || matches!(
        rule_for(method, template).unwrap_or(Rule::Admin),
        Rule::Admin | Rule::Subscription(Access::Dlq) | Rule::Topic(Access::Dlq)
    )
}

/// The value of the path parameter `{name}` of `template` in `path`, percent-decoded.
pub fn path_param(template: &str, path: &str, name: &str) -> Option<String> {
    let want = format!("{{{name}}}");
    let i = template.split('/').position(|seg| seg == want)?;
    let raw = path.split('/').nth(i)?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_found_by_the_template() {
        assert_eq!(
            path_param(
                "/v1/topics/{topic}/events",
                "/v1/topics/deals/events",
                "topic"
            ),
            Some("deals".into())
        );
        assert_eq!(
            path_param(
                "/v1/subscriptions/{name}/dlq/{entry}",
                "/v1/subscriptions/erp%2Esync/dlq/0-1",
                "name"
            ),
            Some("erp.sync".into())
        );
        assert_eq!(path_param("/v1/topics", "/v1/topics", "topic"), None);
        // As the router decodes a path: `&`, `+` and `=` are themselves.
        assert_eq!(
            path_param("/v1/topics/{topic}", "/v1/topics/de&a+l=s", "topic"),
            Some("de&a+l=s".into())
        );
    }

    #[test]
    fn every_documented_route_has_a_rule() {
        let doc = crate::openapi::document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut routes = 0;
        for (path, item) in paths {
            for method in item.as_object().expect("operations").keys() {
                let m = method.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()) {
                    continue;
                }
                routes += 1;
                assert!(rule_for(&m, path).is_some(), "{m} {path} has no rule");
            }
        }
        assert!(routes >= 33, "{routes} routes");
    }

    #[test]
    fn unknown_routes_have_no_rule() {
        assert_eq!(rule_for("PATCH", "/v1/topics"), None);
        assert_eq!(rule_for("POST", "/v1/topics"), Some(Rule::Admin));
    }
}
