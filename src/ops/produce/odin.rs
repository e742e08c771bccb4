//! Seed 004's odin token events, as its `RedpandaPublisher` sends them:
//! one JSON object per message (`type`, `timestamp` in epoch ms, `data`),
//! keyed by the token id, the Kafka timestamp the event's, gzip on the
//! wire. Event types come with the seed's weights: about half trading,
//! 30 % liquidity, price and analytics, 20 % community, metadata and
//! balances, under 1 % token creation and verification.

use serde_json::{Value, json};

use super::{Generated, Load};
use crate::time::Timestamp;

/// The event types: name, topic, and weight (per 1,000 events). Seed 004
/// speaks of 24 types and lists these 23.
pub const EVENTS: [(&str, &str, u32); 23] = [
    ("TRADE_EXECUTED", "odin.trades", 250),
    ("BUY_COMPLETED", "odin.trades", 125),
    ("SELL_COMPLETED", "odin.trades", 125),
    ("LIQUIDITY_ADDED", "odin.liquidity", 50),
    ("LIQUIDITY_REMOVED", "odin.liquidity", 50),
    ("LIQUIDITY_REBALANCED", "odin.liquidity", 30),
    ("PRICE_DELTA_UPDATED", "odin.analytics", 70),
    ("HOLDER_COUNT_UPDATED", "odin.analytics", 40),
    ("ANALYTICS_RECALCULATED", "odin.analytics", 30),
    ("TRENDING_UPDATED", "odin.analytics", 30),
    ("COMMENT_POSTED", "odin.community", 50),
    ("COMMENT_PINNED", "odin.community", 10),
    ("COMMENT_UPVOTED", "odin.community", 30),
    ("FAVORITE_TOGGLED", "odin.community", 20),
    ("METADATA_UPDATED", "odin.metadata", 15),
    ("TOKEN_NAME_CHANGED", "odin.metadata", 5),
    ("TOKEN_FLAGS_CHANGED", "odin.metadata", 5),
    ("SOCIAL_LINKS_UPDATED", "odin.social", 7),
    ("BALANCE_UPDATED", "odin.balances", 30),
    ("TRANSFER_COMPLETED", "odin.balances", 20),
    ("TOKEN_CREATED", "odin.creation", 3),
    ("TOKEN_LISTED", "odin.creation", 3),
    ("TWITTER_VERIFIED", "odin.social", 2),
];

/// The topics of the stream.
pub const TOPICS: [&str; 8] = [
    "odin.trades",
    "odin.liquidity",
    "odin.metadata",
    "odin.social",
    "odin.community",
    "odin.creation",
    "odin.analytics",
    "odin.balances",
];

/// Makes odin events; deterministic for a given start time.
pub struct OdinGenerator {
    /// Each event is one millisecond after the one before.
    start_ms: i64,
    events: u64,
    /// xorshift64 state: which event type and token come next.
    state: u64,
    /// Prepended to every topic name (tests keep their topics apart).
    prefix: String,
}

impl OdinGenerator {
    pub fn new(start: Timestamp, prefix: &str) -> OdinGenerator {
        OdinGenerator {
            start_ms: start.micros() / 1000,
            events: 0,
            state: 0x9E37_79B9_7F4A_7C15,
            prefix: prefix.to_owned(),
        }
    }

    fn random(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// The next event: a type drawn by weight, one of 50 tokens.
    pub fn next_event(&mut self) -> Generated {
        let mut pick = self.random() % 1000;
        let (name, topic) = EVENTS
            .iter()
            .find(|(_, _, weight)| {
                let hit = pick < u64::from(*weight);
                pick = pick.saturating_sub(u64::from(*weight));
                hit
            })
            .map_or((EVENTS[0].0, EVENTS[0].1), |(n, t, _)| (*n, *t));
        let token = format!("token-{}", self.random() % 50);
        let n = self.events;
        self.events += 1;
        let time_ms = self.start_ms + n as i64;
        event(&self.prefix, name, topic, &token, time_ms, n)
    }
}

/// One event of type `name` on `topic` for `token` at `time_ms`; `n`
/// makes its contents (a trade's hash) unique.
pub fn event(
    prefix: &str,
    name: &str,
    topic: &str,
    token: &str,
    time_ms: i64,
    n: u64,
) -> Generated {
    let value = json!({"type": name, "timestamp": time_ms, "data": data(name, n)});
    let table = if topic == "odin.trades" {
        "odin_trades"
    } else {
        "odin_events"
    };
    Generated {
        topic: format!("{prefix}{topic}"),
        key: token.to_owned(),
        value: value.to_string().into_bytes(),
        headers: Vec::new(),
        table,
        rows: 1,
        timestamp_ms: Some(time_ms),
    }
}

/// The event's `data`, as seed 004's simulator fills it.
fn data(name: &str, n: u64) -> Value {
    let amount = |scale: u64| format!("{}.{:02}", n % scale + 1, n % 97);
    match name {
        "TRADE_EXECUTED" | "BUY_COMPLETED" | "SELL_COMPLETED" => json!({
            "price": format!("{}.{:04}", 30 + n % 10, n % 9973),
            "amount": amount(1000),
            "buyer": format!("0x{:013x}", n * 7919),
            "seller": format!("0x{:013x}", n * 104_729),
            "txHash": format!("0x{:016x}", n.wrapping_mul(0x9E37_79B9) ^ 0xbb22),
        }),
        "LIQUIDITY_ADDED" | "LIQUIDITY_REMOVED" | "LIQUIDITY_REBALANCED" => json!({
            "btcAmount": amount(10), "tokenAmount": amount(100_000), "provider": format!("0x{n:013x}"),
        }),
        "PRICE_DELTA_UPDATED" => json!({"delta1h": -1.25, "delta24h": 3.5, "price": amount(100)}),
        "HOLDER_COUNT_UPDATED" => json!({"holders": 100 + n % 5000}),
        "ANALYTICS_RECALCULATED" => {
            json!({"volume24h": amount(1_000_000), "marketCap": amount(10_000_000)})
        }
        "TRENDING_UPDATED" => json!({"rank": n % 100, "score": 0.75}),
        "COMMENT_POSTED" => json!({"commentId": n, "author": format!("0x{n:013x}"), "text": "gm"}),
        "COMMENT_PINNED" | "COMMENT_UPVOTED" => json!({"commentId": n, "votes": n % 40}),
        "FAVORITE_TOGGLED" => {
            json!({"user": format!("0x{n:013x}"), "favorite": n.is_multiple_of(2)})
        }
        "METADATA_UPDATED" => json!({"description": "a token", "image": "ipfs://x"}),
        "TOKEN_NAME_CHANGED" => json!({"name": format!("Token {n}"), "ticker": "TKN"}),
        "TOKEN_FLAGS_CHANGED" => json!({"flags": ["verified"], "nsfw": false}),
        "SOCIAL_LINKS_UPDATED" => json!({"twitter": "https://x.com/t", "website": "https://t.io"}),
        "TWITTER_VERIFIED" => json!({"handle": "@token", "verified": true}),
        "BALANCE_UPDATED" => json!({"holder": format!("0x{n:013x}"), "balance": amount(1_000_000)}),
        "TRANSFER_COMPLETED" => {
            json!({"from": format!("0x{n:013x}"), "to": format!("0x{:013x}", n + 1), "amount": amount(1000)})
        }
        "TOKEN_CREATED" | "TOKEN_LISTED" => {
            json!({"creator": format!("0x{n:013x}"), "supply": "21000000"})
        }
        _ => json!({}),
    }
}

impl Load for OdinGenerator {
    fn next_message(&mut self) -> Generated {
        self.next_event()
    }

    fn compression(&self) -> &'static str {
        "gzip"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_are_seed_004s() {
        let total: u32 = EVENTS.iter().map(|e| e.2).sum();
        assert_eq!(total, 1000);
        let share = |topics: &[&str], names: &[&str]| -> u32 {
            EVENTS
                .iter()
                .filter(|(n, t, _)| topics.contains(t) && !names.contains(n))
                .map(|e| e.2)
                .sum()
        };
        let rare = ["TOKEN_CREATED", "TOKEN_LISTED", "TWITTER_VERIFIED"];
        assert_eq!(share(&["odin.trades"], &[]), 500);
        assert_eq!(share(&["odin.liquidity", "odin.analytics"], &[]), 300);
        assert_eq!(
            share(
                &[
                    "odin.community",
                    "odin.metadata",
                    "odin.balances",
                    "odin.social"
                ],
                &rare
            ),
            192
        );
        assert!(share(&["odin.creation", "odin.social"], &["SOCIAL_LINKS_UPDATED"]) < 10);
        let names: std::collections::BTreeSet<&str> = EVENTS.iter().map(|e| e.0).collect();
        assert_eq!(names.len(), 23);
        // A long run draws every type, about as weighted.
        let mut g = OdinGenerator::new(Timestamp(1_795_370_400_000_000), "");
        let mut trades = 0;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let e = g.next_event();
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            seen.insert(v["type"].as_str().unwrap().to_owned());
            trades += usize::from(e.table == "odin_trades");
        }
        assert_eq!(seen.len(), 23);
        assert!((9_500..10_500).contains(&trades), "{trades}");
    }
}
