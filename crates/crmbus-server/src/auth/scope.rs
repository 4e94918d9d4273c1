//! What an API key may do: its scopes (`publish:<topic-pattern>`, `subscribe:<…>`,
//! `dlq:<…>`, `admin`), and the permission each request needs.
//!
//! A topic pattern is a topic name in which `*` matches any run of characters (`deals`,
//! `deal*`, `*`). `subscribe` covers pulls, acks, live streams and reads of a topic;
//! `dlq` inspecting, redriving and discarding its dead letters; `admin` everything that
//! changes the bus's shape (topics, subscriptions, schemas, keys) and every other scope.

use std::fmt;

use crmbus::delivery::glob_match;

/// One scope of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Publish to the topics the pattern matches.
    Publish(String),
    /// Pull, ack, stream and read the topics the pattern matches.
    Subscribe(String),
    /// Inspect, redrive and discard the dead letters of subscriptions on those topics.
    Dlq(String),
    /// Everything.
    Admin,
}

/// What a request needs: a kind of access, on a topic where it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Publishing to a topic.
    Publish(String),
    /// Reading a topic, or pulling, acking or streaming from it.
    Subscribe(String),
    /// A dead-letter action on a subscription of a topic.
    Dlq(String),
    /// Changing topics, subscriptions, schemas or keys.
    Admin,
}

/// Why a scope's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope '{text}': {why}")]
pub struct ScopeError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// The characters of a topic pattern: a topic name's, and `*`.
fn valid_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 200
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'))
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Scope, ScopeError> {
        let err = |why: &str| ScopeError {
            text: text.to_string(),
            why: why.to_string(),
        };
        if text == "admin" {
            return Ok(Scope::Admin);
        }
        let Some((kind, pattern)) = text.split_once(':') else {
            return Err(err(
                "must be admin, or publish:, subscribe: or dlq: and a topic pattern",
            ));
        };
        if !valid_pattern(pattern) {
            return Err(err(
                "the topic pattern must be 1-200 characters of A-Z a-z 0-9 . _ - and *",
            ));
        }
        let pattern = pattern.to_string();
        match kind {
            "publish" => Ok(Scope::Publish(pattern)),
            "subscribe" => Ok(Scope::Subscribe(pattern)),
            "dlq" => Ok(Scope::Dlq(pattern)),
            _ => Err(err("the kind must be publish, subscribe, dlq or admin")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Publish(p) => write!(f, "publish:{p}"),
            Scope::Subscribe(p) => write!(f, "subscribe:{p}"),
            Scope::Dlq(p) => write!(f, "dlq:{p}"),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

impl fmt::Display for Permission {
    /// The scope that would grant it, as a 403 names it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Publish(t) => write!(f, "publish:{t}"),
            Permission::Subscribe(t) => write!(f, "subscribe:{t}"),
            Permission::Dlq(t) => write!(f, "dlq:{t}"),
            Permission::Admin => f.write_str("admin"),
        }
    }
}

impl Scope {
    /// Whether this scope grants `needed`.
    pub fn grants(&self, needed: &Permission) -> bool {
        match (self, needed) {
            (Scope::Admin, _) => true,
            (Scope::Publish(p), Permission::Publish(t))
            | (Scope::Subscribe(p), Permission::Subscribe(t))
            | (Scope::Dlq(p), Permission::Dlq(t)) => glob_match(p, t),
            _ => false,
        }
    }
}

/// Whether any of `scopes` grants `needed`.
pub fn granted(scopes: &[Scope], needed: &Permission) -> bool {
    scopes.iter().any(|s| s.grants(needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        s.parse().expect("scope")
    }

    #[test]
    fn scopes_read_and_print_back() {
        for text in [
            "admin",
            "publish:deals",
            "subscribe:deal*",
            "dlq:*",
            "publish:a.b_c-d",
        ] {
            assert_eq!(scope(text).to_string(), text);
        }
        for bad in [
            "",
            "root",
            "publish",
            "publish:",
            "read:deals",
            "publish:dea ls",
            "subscribe:a/b",
        ] {
            let e = bad.parse::<Scope>().expect_err(bad);
            assert_eq!(e.text, bad);
        }
    }

    #[test]
    fn a_scope_grants_its_kind_on_the_topics_it_matches() {
        let p = |t: &str| Permission::Publish(t.into());
        assert!(scope("publish:deals").grants(&p("deals")));
        assert!(!scope("publish:deals").grants(&p("deals-archive")));
        assert!(scope("publish:deal*").grants(&p("deals-archive")));
        assert!(!scope("subscribe:deals").grants(&p("deals")));
        assert!(!scope("dlq:*").grants(&Permission::Subscribe("deals".into())));
        assert!(scope("dlq:*").grants(&Permission::Dlq("deals".into())));
        assert!(!scope("publish:*").grants(&Permission::Admin));
        for needed in [p("x"), Permission::Subscribe("y".into()), Permission::Admin] {
            assert!(scope("admin").grants(&needed));
        }
        assert!(granted(
            &[scope("subscribe:leads"), scope("publish:deals")],
            &p("deals")
        ));
        assert!(!granted(&[], &p("deals")));
        assert_eq!(Permission::Dlq("deals".into()).to_string(), "dlq:deals");
    }
}
