//! What became of one message: the rows it was validated into, or why it
//! is dead-lettered. Decode and validate say it, the batch carries it, the
//! writer and the dead-letter producer act on it.

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The message decoded and validated into this many rows (an array may
    /// hold several, or none), encoded into its batch in order.
    Rows(usize),
    /// The message goes to the dead-letter topic.
    DeadLetter(Rejection),
}

/// Why a message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind of problem: the `reason` label of `timesink_dead_letters_total`.
    pub class: RejectClass,
    /// One human-readable line: the `dlq.reason` header.
    pub reason: String,
}

impl Rejection {
    /// The reason is cut at `quote::MAX_REASON_CHARS`: each value it quotes
    /// is cut already, this bounds what quotes more than one.
    pub fn new(class: RejectClass, reason: impl Into<String>) -> Rejection {
        Rejection {
            class,
            reason: crate::quote::reason(reason.into()),
        }
    }
}

/// The kinds of problem that dead-letter a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectClass {
    /// The value is larger than `max_value_bytes`, as sent or inflated.
    TooLarge,
    /// A `content-type`, `compressed` or `schema-version` header the sink does not know.
    Encoding,
    /// The value is not what its encoding says (JSON, bincode, LZ4), or the
    /// envelope names another data type.
    Decode,
    /// The record breaks a rule of the contract.
    Validation,
    /// PostgreSQL refused the row (a constraint or value the tables reject).
    Database,
}

impl RejectClass {
    pub const ALL: [RejectClass; 5] = [
        RejectClass::TooLarge,
        RejectClass::Encoding,
        RejectClass::Decode,
        RejectClass::Validation,
        RejectClass::Database,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RejectClass::TooLarge => "too_large",
            RejectClass::Encoding => "encoding",
            RejectClass::Decode => "decode",
            RejectClass::Validation => "validation",
            RejectClass::Database => "database",
        }
    }
}
