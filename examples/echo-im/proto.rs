//! The chat's own payloads, carried in liveline MESSAGE frames (so every one of them is
//! acknowledged, resent after a failover, and never handed over twice by one server). The
//! normative description, for clients written in other languages, is docs/ECHO-IM.md.
//!
//! UTF-8 text, fields separated by single spaces, the free text last:
//!
//! ```text
//! client -> server   B <text>                 broadcast to everyone else online
//!                    T <user> <text>          direct message
//!                    E <text>                 echo back to me
//!                    U                        who is online?
//! server -> client   M <origin> <from> <kind> <text>   a message; kind: all | to | echo
//!                    U <user>...                         who is online
//!                    N <text>                            a notice from the server
//!                    S <node>                            the server's name, after login
//! ```
//!
//! `<origin>` is `<instance hex>:<id>` of the sender's MESSAGE: when a sender fails over
//! and resends a message the first server had already relayed, the recipient sees the same
//! origin twice and shows it once.

/// The longest text a client may send, in bytes: what the server relays adds the origin,
/// the sender's name and the kind, and must still fit in one frame (64 KiB by default).
pub const MAX_TEXT: usize = 60_000;

/// What a client asks of the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Broadcast(&'a str),
    Direct { to: &'a str, text: &'a str },
    Echo(&'a str),
    Users,
}

impl<'a> Request<'a> {
    pub fn parse(s: &'a str) -> Option<Request<'a>> {
        let (verb, rest) = s.split_once(' ').unwrap_or((s, ""));
        match verb {
            "B" => Some(Request::Broadcast(rest)),
            "E" => Some(Request::Echo(rest)),
            "U" => Some(Request::Users),
            "T" => {
                let (to, text) = rest.split_once(' ')?;
                (!to.is_empty()).then_some(Request::Direct { to, text })
            }
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Request::Broadcast(t) => format!("B {t}"),
            Request::Direct { to, text } => format!("T {to} {text}"),
            Request::Echo(t) => format!("E {t}"),
            Request::Users => "U".to_string(),
        }
    }
}

/// What the server tells a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Push<'a> {
    Message {
        origin: &'a str,
        from: &'a str,
        kind: &'a str,
        text: &'a str,
    },
    Users(Vec<&'a str>),
    Notice(&'a str),
    Server(&'a str),
}

impl<'a> Push<'a> {
    pub fn parse(s: &'a str) -> Option<Push<'a>> {
        let (verb, rest) = s.split_once(' ').unwrap_or((s, ""));
        match verb {
            "M" => {
                let mut it = rest.splitn(4, ' ');
                Some(Push::Message {
                    origin: it.next()?,
                    from: it.next()?,
                    kind: it.next()?,
                    text: it.next().unwrap_or(""),
                })
            }
            "U" => Some(Push::Users(
                rest.split(' ').filter(|u| !u.is_empty()).collect(),
            )),
            "N" => Some(Push::Notice(rest)),
            "S" => Some(Push::Server(rest)),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match self {
            Push::Message {
                origin,
                from,
                kind,
                text,
            } => format!("M {origin} {from} {kind} {text}"),
            Push::Users(users) => format!("U {}", users.join(" ")),
            Push::Notice(t) => format!("N {t}"),
            Push::Server(node) => format!("S {node}"),
        }
    }
}

/// The rule [`valid_name`] checks, as users are told it.
pub const NAME_RULE: &str = "names: 1-32 of a-z A-Z 0-9 - _ .";

/// A user name: 1 to 32 characters, letters, digits, `-`, `_` or `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
