//! The recorded history: what each client asked, when, and what it was told.

use std::fmt;

/// One request of one client, with its invocation and response times.
///
/// Times are nanoseconds on one clock shared by all clients (for example since the test
/// started). `call` is taken before the request is sent and `ret` after its response arrived,
/// so an operation took effect, if at all, somewhere in `[call, ret]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the request (only used in reports).
    pub client_id: u64,
    /// When the request was invoked.
    pub call: u64,
    /// When its response arrived; `None` when the outcome is unknown (timeout, broken
    /// connection): it may or may not have taken effect, at any time after `call`.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What was answered; `Some` exactly when `ret` is.
    pub output: Option<Output>,
}

/// A request on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `Put(key, value)`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value written.
        value: Vec<u8>,
    },
    /// A linearizable `Range` of one key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// `DeleteRange` of one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// A `Txn`: if `mod_revision(key) == expected_mod_revision` then `Put(key, value)`.
    /// `expected_mod_revision` 0 means "the key does not exist" (how Kubernetes creates).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The compared mod_revision.
        expected_mod_revision: i64,
        /// The value written on success.
        value: Vec<u8>,
    },
}

/// A response; every one carries the store revision of its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Answer to [`Input::Put`]: the revision the put created.
    Put {
        /// Header revision.
        revision: i64,
    },
    /// Answer to [`Input::Get`].
    Get {
        /// The key's value, or `None` if it did not exist.
        kv: Option<KeyValue>,
        /// Header revision: the store revision the read saw.
        revision: i64,
    },
    /// Answer to [`Input::Delete`].
    Delete {
        /// How many keys were deleted (0 or 1).
        deleted: i64,
        /// Header revision.
        revision: i64,
    },
    /// Answer to [`Input::Cas`].
    Cas {
        /// Whether the compare held and the put was done.
        succeeded: bool,
        /// Header revision.
        revision: i64,
    },
}

/// A key's value as a read returned it. `create_revision` and `version` are checked when
/// recorded (`Some`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's last modification.
    pub mod_revision: i64,
    /// Revision that created the key (since its last deletion).
    pub create_revision: Option<i64>,
    /// Number of puts since the key was created (1 after creation).
    pub version: Option<i64>,
}

impl KeyValue {
    /// A value with its mod_revision only.
    pub fn new(value: impl Into<Vec<u8>>, mod_revision: i64) -> Self {
        Self {
            value: value.into(),
            mod_revision,
            create_revision: None,
            version: None,
        }
    }

    /// A value with all of etcd's revision fields.
    pub fn full(
        value: impl Into<Vec<u8>>,
        mod_revision: i64,
        create_revision: i64,
        version: i64,
    ) -> Self {
        Self {
            value: value.into(),
            mod_revision,
            create_revision: Some(create_revision),
            version: Some(version),
        }
    }
}

impl Input {
    /// `Put(key, value)`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `Get(key)`.
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Self::Get { key: key.into() }
    }

    /// `Delete(key)`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// `if mod_revision(key) == expected_mod_revision then Put(key, value)`.
    pub fn cas(
        key: impl Into<Vec<u8>>,
        expected_mod_revision: i64,
        value: impl Into<Vec<u8>>,
    ) -> Self {
        Self::Cas {
            key: key.into(),
            expected_mod_revision,
            value: value.into(),
        }
    }

    /// The key the request is about.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. }
            | Self::Get { key }
            | Self::Delete { key }
            | Self::Cas { key, .. } => key,
        }
    }
}

impl Output {
    /// The header revision.
    pub fn revision(&self) -> i64 {
        match self {
            Self::Put { revision }
            | Self::Get { revision, .. }
            | Self::Delete { revision, .. }
            | Self::Cas { revision, .. } => *revision,
        }
    }
}

impl Operation {
    /// An operation whose outcome is unknown (so far): it was invoked at `call`.
    pub fn new(client_id: u64, call: u64, input: Input) -> Self {
        Self {
            client_id,
            call,
            ret: None,
            input,
            output: None,
        }
    }

    /// The same operation, answered with `output` at `ret`.
    pub fn returned(self, ret: u64, output: Output) -> Self {
        Self {
            ret: Some(ret),
            output: Some(output),
            ..self
        }
    }

    /// The operation as a write that the store acknowledged: its revision and its effect on
    /// its key (`None` for the value of a delete). `None` for reads, failed compares, deletes
    /// of nothing and unknown outcomes.
    pub fn acknowledged_write(&self) -> Option<(i64, Option<&[u8]>)> {
        match (&self.input, self.output.as_ref()?) {
            (Input::Put { value, .. }, Output::Put { revision }) => Some((*revision, Some(value))),
            (Input::Delete { .. }, Output::Delete { deleted, revision }) if *deleted > 0 => {
                Some((*revision, None))
            }
            (
                Input::Cas { value, .. },
                Output::Cas {
                    succeeded: true,
                    revision,
                },
            ) => Some((*revision, Some(value))),
            _ => None,
        }
    }

    /// Whether the operation, with an unknown outcome, might have written `value` (`None`:
    /// deleted) to its key.
    pub(crate) fn may_have_written(&self, value: Option<&[u8]>) -> bool {
        if self.output.is_some() {
            return false;
        }
        match (&self.input, value) {
            (Input::Put { value: v, .. } | Input::Cas { value: v, .. }, Some(w)) => v == w,
            (Input::Delete { .. }, None) => true,
            _ => false,
        }
    }
}

/// Bytes as a quoted string when they are printable UTF-8, else as hex.
pub(crate) struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if !s.chars().any(char::is_control) => write!(f, "{s:?}"),
            _ => {
                f.write_str("0x")?;
                self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (mod_revision {}",
            Bytes(&self.value),
            self.mod_revision
        )?;
        if let Some(c) = self.create_revision {
            write!(f, ", create_revision {c}")?;
        }
        if let Some(v) = self.version {
            write!(f, ", version {v}")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { key, value } => write!(f, "put({}, {})", Bytes(key), Bytes(value)),
            Self::Get { key } => write!(f, "get({})", Bytes(key)),
            Self::Delete { key } => write!(f, "delete({})", Bytes(key)),
            Self::Cas {
                key,
                expected_mod_revision,
                value,
            } => write!(
                f,
                "cas({}, mod_revision == {expected_mod_revision}, {})",
                Bytes(key),
                Bytes(value)
            ),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { revision } => write!(f, "ok, revision {revision}"),
            Self::Get {
                kv: Some(kv),
                revision,
            } => write!(f, "{kv}, revision {revision}"),
            Self::Get { kv: None, revision } => write!(f, "not found, revision {revision}"),
            Self::Delete { deleted, revision } => {
                write!(f, "deleted {deleted}, revision {revision}")
            }
            Self::Cas {
                succeeded,
                revision,
            } => {
                let outcome = if *succeeded { "succeeded" } else { "failed" };
                write!(f, "{outcome}, revision {revision}")
            }
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} [{}ns..", self.client_id, self.call)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}ns]")?,
            None => f.write_str("?]")?,
        }
        write!(f, " {} -> ", self.input)?;
        match &self.output {
            Some(output) => write!(f, "{output}"),
            None => f.write_str("unknown outcome"),
        }
    }
}
