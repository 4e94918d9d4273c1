//! Checks shared by the CloudEvents targets.

use crmbus::Event;

/// An accepted event must be valid and read back from its structured JSON as itself,
/// time offset included.
pub fn check_accepted(event: &Event) {
    assert_eq!(
        event.validate(),
        Ok(()),
        "accepted an invalid event: {event:?}"
    );
    let bytes = event.to_json_vec();
    let back = Event::from_json_slice(&bytes).expect("an accepted event reads back");
    assert_eq!(&back, event, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        back.time.map(|t| *t.offset()),
        event.time.map(|t| *t.offset())
    );
}
