//! The subscription table: how many live subscriptions each prefix has, as
//! seen through `ZMQ_XPUB_VERBOSER` (every subscribe and unsubscribe, from
//! every subscriber, including the unsubscribes libzmq generates when a
//! subscriber disconnects).
//!
//! Counting matches for an event's topic looks the topic's prefixes up by
//! length: one hash lookup per distinct prefix length in the table, not one
//! per subscription.

use std::collections::{BTreeMap, HashMap};

/// A subscription change decoded from an XPUB message.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// `\x01<prefix>`.
    Subscribe(&'a [u8]),
    /// `\x00<prefix>`.
    Unsubscribe(&'a [u8]),
}

/// Decodes an XPUB upstream message; `None` for anything else (libzmq lets
/// subscribers send arbitrary messages upstream, which are forwarded as is).
pub fn decode(msg: &[u8]) -> Option<Change<'_>> {
    match msg.split_first()? {
        (1, prefix) => Some(Change::Subscribe(prefix)),
        (0, prefix) => Some(Change::Unsubscribe(prefix)),
        _ => None,
    }
}

/// Live subscriptions by prefix.
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    counts: HashMap<Vec<u8>, u64>,
    /// Prefix length → number of distinct prefixes of that length.
    lengths: BTreeMap<usize, usize>,
}

impl SubscriptionTable {
    /// Applies a change; returns the prefix's new count.
    pub fn apply(&mut self, change: &Change<'_>) -> u64 {
        match *change {
            Change::Subscribe(p) => {
                let n = self.counts.entry(p.to_vec()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    *self.lengths.entry(p.len()).or_insert(0) += 1;
                }
                *n
            }
            Change::Unsubscribe(p) => {
                let Some(n) = self.counts.get_mut(p) else {
                    return 0;
                };
                *n -= 1;
                let left = *n;
                if left == 0 {
                    self.counts.remove(p);
                    if let Some(l) = self.lengths.get_mut(&p.len()) {
                        *l -= 1;
                        if *l == 0 {
                            self.lengths.remove(&p.len());
                        }
                    }
                }
                left
            }
        }
    }

    /// Number of subscriptions whose prefix matches `topic`.
    pub fn matches(&self, topic: &[u8]) -> u64 {
        self.lengths
            .keys()
            .take_while(|&&len| len <= topic.len())
            .filter_map(|&len| self.counts.get(&topic[..len]))
            .sum()
    }

    /// Total live subscriptions.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_subscription_messages() {
        assert_eq!(decode(b"\x01req"), Some(Change::Subscribe(b"req")));
        assert_eq!(decode(b"\x00"), Some(Change::Unsubscribe(b"")));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x02x"), None);
    }

    #[test]
    fn counts_matching_subscriptions() {
        let mut t = SubscriptionTable::default();
        t.apply(&Change::Subscribe(b""));
        t.apply(&Change::Subscribe(b"requests"));
        t.apply(&Change::Subscribe(b"requests"));
        t.apply(&Change::Subscribe(b"server.status"));
        assert_eq!(t.matches(b"requests.completed"), 3);
        assert_eq!(t.matches(b"server.status"), 2);
        assert_eq!(
            t.matches(b"server"),
            1,
            "a prefix longer than the topic does not match"
        );
        assert_eq!(t.matches(b"other"), 1);
        assert_eq!(t.total(), 4);
    }

    #[test]
    fn unsubscribe_removes_and_ignores_unknown() {
        let mut t = SubscriptionTable::default();
        assert_eq!(t.apply(&Change::Unsubscribe(b"x")), 0);
        t.apply(&Change::Subscribe(b"a"));
        t.apply(&Change::Subscribe(b"a"));
        assert_eq!(t.apply(&Change::Unsubscribe(b"a")), 1);
        assert_eq!(t.matches(b"abc"), 1);
        assert_eq!(t.apply(&Change::Unsubscribe(b"a")), 0);
        assert_eq!(t.matches(b"abc"), 0);
        assert!(t.lengths.is_empty());
        assert_eq!(t.total(), 0);
    }
}
