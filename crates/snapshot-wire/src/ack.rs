//! The acknowledgement message: `POST /v1/acks` with
//! `{"stream": "tenants/acme", "subscriber": "router/acme/0", "version": 7, "ok": false, "reason": "..."}`.
//!
//! The stream is authenticated (the caller may acknowledge only the stream it may read); the
//! subscriber name is the caller's own label, unverified, used to tell replicas apart.

use crate::limits::{MAX_ACK_REASON_LEN, MAX_SUBSCRIBER_LEN};
use crate::stream::StreamName;
use bulkhead_snapshot::Ack;
use serde::{Deserialize, Serialize};

/// One acknowledgement on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckMessage {
    /// The stream whose snapshot is answered.
    pub stream: StreamName,
    /// Who answers (e.g. `router/acme/acme-router-7d9f-xk2p`).
    pub subscriber: String,
    /// The snapshot version answered.
    pub version: u64,
    /// Whether the version is now served.
    pub ok: bool,
    /// Why it was refused (only when `ok` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An acknowledgement the server refuses to forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckMessageError {
    /// The subscriber name is empty or longer than [`MAX_SUBSCRIBER_LEN`].
    #[error("subscriber name must be 1 to {MAX_SUBSCRIBER_LEN} bytes")]
    Subscriber,
    /// The reason is longer than [`MAX_ACK_REASON_LEN`].
    #[error("reason longer than {MAX_ACK_REASON_LEN} bytes")]
    Reason,
}

impl AckMessage {
    /// The wire form of an [`Ack`] on `stream`; a reason over [`MAX_ACK_REASON_LEN`] is truncated
    /// on a character boundary.
    pub fn from_ack(stream: StreamName, ack: &Ack) -> Self {
        let (ok, reason) = match &ack.outcome {
            Ok(()) => (true, None),
            Err(reason) => (false, Some(truncate(reason, MAX_ACK_REASON_LEN).to_owned())),
        };
        Self {
            stream,
            subscriber: ack.subscriber.clone(),
            version: ack.version,
            ok,
            reason,
        }
    }

    /// Checks the sizes the server accepts.
    pub fn validate(&self) -> Result<(), AckMessageError> {
        if self.subscriber.is_empty() || self.subscriber.len() > MAX_SUBSCRIBER_LEN {
            return Err(AckMessageError::Subscriber);
        }
        if self
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > MAX_ACK_REASON_LEN)
        {
            return Err(AckMessageError::Reason);
        }
        Ok(())
    }

    /// The stream and the [`Ack`] the operator receives.
    pub fn into_ack(self) -> (StreamName, Ack) {
        let outcome = if self.ok {
            Ok(())
        } else {
            Err(self.reason.unwrap_or_default())
        };
        let ack = Ack {
            subscriber: self.subscriber,
            version: self.version,
            outcome,
        };
        (self.stream, ack)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_round_trips_through_json() {
        let ack = Ack {
            subscriber: "router/acme/0".into(),
            version: 7,
            outcome: Err("bad regex".into()),
        };
        let msg = AckMessage::from_ack(StreamName::tenant("acme").unwrap(), &ack);
        let json = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            json,
            r#"{"stream":"tenants/acme","subscriber":"router/acme/0","version":7,"ok":false,"reason":"bad regex"}"#
        );
        let back: AckMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back.validate(), Ok(()));
        assert_eq!(back.into_ack(), (StreamName::tenant("acme").unwrap(), ack));
    }

    #[test]
    fn long_reasons_are_truncated_on_a_character_boundary() {
        let ack = Ack {
            subscriber: "s".into(),
            version: 1,
            outcome: Err("é".repeat(MAX_ACK_REASON_LEN)),
        };
        let msg = AckMessage::from_ack(StreamName::Edge, &ack);
        let reason = msg.reason.as_deref().unwrap();
        assert_eq!(reason.len(), MAX_ACK_REASON_LEN);
        assert_eq!(msg.validate(), Ok(()));
    }

    #[test]
    fn oversized_fields_and_unknown_fields_are_refused() {
        let mut msg = AckMessage::from_ack(
            StreamName::Edge,
            &Ack {
                subscriber: String::new(),
                version: 1,
                outcome: Ok(()),
            },
        );
        assert_eq!(msg.validate(), Err(AckMessageError::Subscriber));
        msg.subscriber = "x".repeat(MAX_SUBSCRIBER_LEN + 1);
        assert_eq!(msg.validate(), Err(AckMessageError::Subscriber));
        msg.subscriber = "edge/0".into();
        msg.reason = Some("r".repeat(MAX_ACK_REASON_LEN + 1));
        assert_eq!(msg.validate(), Err(AckMessageError::Reason));
        let extra = r#"{"stream":"edge","subscriber":"e","version":1,"ok":true,"x":1}"#;
        assert!(serde_json::from_str::<AckMessage>(extra).is_err());
    }
}
