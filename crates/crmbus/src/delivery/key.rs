//! [`Key`]: what the delivery engine queues, orders and holds events by, and what a
//! finished delivery names when it reports back.

use std::fmt;
use std::sync::Arc;

/// A key of the engine's queues. With key ordering it is the event's subject (or its id
/// when it has none); without, each event is a key of its own, named by its offset.
///
/// Its name is what the state store keeps for it (retry records, dead letters): a subject
/// or id as it is, an offset as `#<offset>`. The two forms are one key space: a name of
/// the form `#<offset>` (decimal, no leading zero) is always [`Key::Offset`] however it
/// arrived, so a key read back from its stored name is the key it was, and two keys are
/// equal exactly when their names are. An offset takes no allocation and hashes as a
/// number, which is most of what a subscription without key ordering costs per event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    /// A subject or event id. Shared, so that the queues, the ready list, timers and
    /// completions hold it without copying it.
    Named(Arc<str>),
    /// An event of a subscription without key ordering: its offset.
    Offset(u64),
}

impl Key {
    /// The offset a name stands for: `Some` exactly when the name is what
    /// [`Key::Offset`] displays (`#`, then the offset in decimal with no leading zero).
    fn parse(name: &str) -> Option<u64> {
        let digits = name.strip_prefix('#')?;
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if !canonical {
            return None;
        }
        digits.parse().ok()
    }
}

/// The key named `name`: [`Key::Offset`] when [`Key::parse`] reads an offset in it,
/// otherwise [`Key::Named`].
impl From<&str> for Key {
    fn from(name: &str) -> Key {
        match Key::parse(name) {
            Some(offset) => Key::Offset(offset),
            None => Key::Named(Arc::from(name)),
        }
    }
}

/// As `From<&str>` (an `Arc<str>` holds its own copy of the text either way).
impl From<String> for Key {
    fn from(name: String) -> Key {
        Key::from(name.as_str())
    }
}

impl fmt::Display for Key {
    /// The key's name, as the state store keeps it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Named(name) => f.write_str(name),
            Key::Offset(offset) => write!(f, "#{offset}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn an_offset_and_its_name_are_one_key() {
        assert_eq!(Key::from("#42"), Key::Offset(42));
        assert_eq!(Key::from("#0"), Key::Offset(0));
        assert_eq!(Key::from(String::from("#7")), Key::Offset(7));
        assert_eq!(Key::Offset(42).to_string(), "#42");
        for offset in [0, 1, 9, 10, 12_345, u64::MAX] {
            let key = Key::Offset(offset);
            assert_eq!(Key::from(key.to_string()), key, "{offset}");
        }
    }

    #[test]
    fn other_names_stay_names_and_read_back_as_themselves() {
        for name in [
            "deal-42",
            "#",
            "#007",
            "#00",
            "#-1",
            "#+1",
            "# 1",
            "#1a",
            "#18446744073709551616",
            "42",
            "",
        ] {
            let key = Key::from(name);
            assert!(matches!(key, Key::Named(_)), "{name:?} became {key:?}");
            assert_eq!(key.to_string(), name);
            assert_eq!(Key::from(key.to_string()), key);
        }
        assert_ne!(Key::from("#007"), Key::Offset(7));
    }
}
