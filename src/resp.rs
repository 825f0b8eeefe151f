//! RESP3, the Redis serialization protocol version 3: command encoding and a
//! zero-copy reply decoder.
//!
//! Decoding is split in two. [`frame_len`] checks one complete reply at the front
//! of a buffer against [`Limits`] and reports its length without building
//! anything; [`parse`] does the same and returns a [`Value`], a borrowed view
//! whose accessors re-read bytes that were already checked. Nothing here does I/O,
//! allocates per reply, or panics on hostile input.
//!
//! Attributes (`|`) are metadata a client may ignore, so they are treated as part
//! of the value they annotate: [`frame_len`] counts them and [`Value`] skips them.
//! Streamed strings and aggregates (`$?`, `*?`, ...) are refused with
//! [`RespError::Streamed`]; Redis does not send them to clients.

use bytes::BytesMut;
use std::fmt;
use std::iter::FusedIterator;

/// Ceiling on [`Limits::max_depth`].
///
/// The scanner keeps its stack of open aggregates in a fixed array, so checking a
/// reply never allocates and never recurses, whatever the limits say.
pub const DEPTH_CEILING: usize = 64;

/// Longest line accepted where only a number (or `t`, `f`, nothing) may appear.
///
/// Any valid 64-bit number fits with room for a few leading zeros; buffering more
/// of such a line would only delay an error that is already certain.
const NUMBER_LINE_MAX: usize = 32;

/// Decimal digits of `usize::MAX` on 64-bit targets, the widest that Rust has.
const USIZE_DIGITS: usize = 20;

/// Limits for re-reading bytes that already passed [`scan`] with the caller's
/// limits, where nothing is left to enforce but the fixed depth ceiling.
const TRUSTED: Limits = Limits {
    max_bulk: usize::MAX,
    max_elements: usize::MAX,
    max_depth: DEPTH_CEILING,
};

/// Appends `args` to `out` as one command: a RESP array of bulk strings.
///
/// `out` grows by exactly [`command_len`] bytes, reserved up front; nothing else
/// is allocated.
pub fn encode_command(out: &mut BytesMut, args: &[&[u8]]) {
    out.reserve(command_len(args));
    put_header(out, b'*', args.len());
    for arg in args {
        put_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Returns the number of bytes [`encode_command`] writes for `args`, so that a
/// caller can enforce an output limit before encoding. Saturates at `usize::MAX`.
pub fn command_len(args: &[&[u8]]) -> usize {
    args.iter().fold(header_len(args.len()), |total, arg| {
        total
            .saturating_add(header_len(arg.len()))
            .saturating_add(arg.len())
            .saturating_add(2)
    })
}

/// Length of a `*N\r\n` or `$N\r\n` header.
fn header_len(n: usize) -> usize {
    n.checked_ilog10().unwrap_or(0) as usize + 4
}

/// Writes `marker`, `n` in decimal and CRLF, formatting on the stack so that the
/// only allocation is growth of `out`.
fn put_header(out: &mut BytesMut, marker: u8, n: usize) {
    let mut digits = [0u8; USIZE_DIGITS];
    let mut start = digits.len();
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
        start -= 1;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&[marker]);
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

/// Bounds that [`frame_len`] and [`parse`] enforce on a reply.
///
/// Each bound is checked as soon as the header declaring it has been read, so a
/// caller never buffers a value that would be refused once complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest payload of a bulk string, bulk error or verbatim string, and
    /// longest line of a simple string, simple error, double or big number, in
    /// bytes.
    pub max_bulk: usize,
    /// Most child values a single aggregate may declare. A map or attribute
    /// entry counts as two values, its key and its value.
    pub max_elements: usize,
    /// Most aggregates (attributes included) that may enclose one another: `1`
    /// allows a flat array of scalars, `0` allows scalars only. Values above
    /// [`DEPTH_CEILING`] act as [`DEPTH_CEILING`].
    pub max_depth: usize,
}

impl Default for Limits {
    /// 64 MiB strings, a million values per aggregate and eight levels of
    /// nesting: enough for ordinary Redis replies, including `XINFO STREAM FULL`.
    fn default() -> Self {
        Limits {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_depth: 8,
        }
    }
}

/// Why a reply was refused. Every variant ends the usefulness of the connection:
/// the stream can no longer be split into replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A value began with a byte that is not a RESP3 type marker.
    UnknownType(u8),
    /// A line or payload was not followed by CRLF, or a line held a bare CR or LF.
    MissingCrlf,
    /// A line ran past its limit without a CRLF.
    LineTooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// An integer, length or count was malformed, negative where it may not
    /// be, or outside the signed 64-bit range.
    BadNumber,
    /// A double was neither a decimal number nor `inf`, `-inf` or `nan`.
    BadDouble,
    /// A boolean was neither `#t` nor `#f`.
    BadBool,
    /// A null (`_`) carried data.
    BadNull,
    /// A big number held something other than an optional sign and digits.
    BadBigNumber,
    /// A verbatim string lacked its three-byte format and colon.
    BadVerbatim,
    /// A string declared a length above [`Limits::max_bulk`].
    TooLarge {
        /// The declared length, in bytes.
        declared: u64,
        /// The limit, in bytes.
        max: usize,
    },
    /// An aggregate declared more child values than [`Limits::max_elements`].
    TooManyElements {
        /// The declared number of child values, map entries counting twice.
        declared: u64,
        /// The limit.
        max: usize,
    },
    /// Aggregates were nested deeper than [`Limits::max_depth`].
    TooDeep {
        /// The depth limit in force.
        max: usize,
    },
    /// A streamed string or aggregate, which this codec does not support; the
    /// byte is its type marker.
    Streamed(u8),
    /// A reply passed the length check but could not be viewed; not expected
    /// from any input, but reported rather than trusted.
    Malformed,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RESP: ")?;
        match self {
            RespError::UnknownType(b) => write!(f, "unknown type byte 0x{b:02x}"),
            RespError::MissingCrlf => f.write_str("expected CRLF line ending"),
            RespError::LineTooLong { max } => write!(f, "line longer than {max} bytes"),
            RespError::BadNumber => f.write_str("malformed or out-of-range number"),
            RespError::BadDouble => f.write_str("malformed double"),
            RespError::BadBool => f.write_str("malformed boolean"),
            RespError::BadNull => f.write_str("null carries data"),
            RespError::BadBigNumber => f.write_str("malformed big number"),
            RespError::BadVerbatim => f.write_str("verbatim string lacks its format"),
            RespError::TooLarge { declared, max } => {
                write!(f, "declared length {declared} exceeds limit {max}")
            }
            RespError::TooManyElements { declared, max } => {
                write!(f, "aggregate declares {declared} values, limit is {max}")
            }
            RespError::TooDeep { max } => write!(f, "aggregates nested deeper than {max}"),
            RespError::Streamed(m) => {
                write!(f, "streamed type '{}' is not supported", char::from(*m))
            }
            RespError::Malformed => f.write_str("reply could not be read back"),
        }
    }
}

impl std::error::Error for RespError {}

/// The RESP3 type of a [`Value`]. Attributes have no kind, since views skip them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `+`: a simple string.
    Simple,
    /// `-`: a simple error.
    Error,
    /// `:`: a signed 64-bit integer.
    Int,
    /// `$`: a bulk (binary-safe) string.
    Bulk,
    /// `_`, or RESP2's `$-1` and `*-1`: null.
    Null,
    /// `#`: a boolean.
    Bool,
    /// `,`: a double.
    Double,
    /// `(`: an integer of any size, kept as decimal text.
    BigNumber,
    /// `!`: a bulk (binary-safe) error.
    BulkError,
    /// `=`: a verbatim string with a three-byte format such as `txt`.
    Verbatim,
    /// `*`: an array.
    Array,
    /// `%`: a map, whose child values alternate key, value.
    Map,
    /// `~`: a set.
    Set,
    /// `>`: out-of-band data such as a pub/sub message.
    Push,
}

/// Returns the length of the complete value at the start of `buf`, leading
/// attributes included, `Ok(None)` if more bytes are needed, or the reason the
/// bytes can never form a valid reply.
///
/// Takes time linear in the bytes examined and no heap memory. Limits are
/// enforced as soon as a header is read, before its payload arrives.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, RespError> {
    scan(buf, limits)
}

/// Checks the value at the start of `buf` like [`frame_len`] and returns a view
/// of it with the number of bytes it occupies.
pub fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<(Value<'a>, usize)>, RespError> {
    let Some(len) = scan(buf, limits)? else {
        return Ok(None);
    };
    let value = buf
        .get(..len)
        .and_then(Value::read)
        .ok_or(RespError::Malformed)?;
    Ok(Some((value, len)))
}

/// What a header line announced.
enum Head<'a> {
    /// A complete scalar: its payload, or its line for numbers and booleans.
    Scalar(Kind, &'a [u8]),
    /// An aggregate and how many child values follow.
    Aggregate(Kind, usize),
    /// An attribute with this many child values, followed by the annotated value.
    Attribute(usize),
}

/// Walks one value without recursion: a fixed stack holds, per open aggregate,
/// the child values still expected and whether it is an attribute.
fn scan(buf: &[u8], limits: &Limits) -> Result<Option<usize>, RespError> {
    // Most values, and most children that `Items` re-scans, are scalars: settle
    // them without setting up the stack.
    match read_head(buf, limits)? {
        None => return Ok(None),
        Some((Head::Scalar(..), used)) => return Ok(Some(used)),
        Some(_) => {}
    }
    let max_depth = limits.max_depth.min(DEPTH_CEILING);
    let mut open = [(0usize, false); DEPTH_CEILING];
    let mut depth = 0usize;
    let mut pos = 0usize;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some((head, used)) = read_head(rest, limits)? else {
            return Ok(None);
        };
        pos = pos.saturating_add(used);
        let (children, attribute) = match head {
            Head::Scalar(..) => (None, false),
            Head::Aggregate(_, n) => (Some(n), false),
            Head::Attribute(n) => (Some(n), true),
        };
        if let Some(children) = children {
            // Empty aggregates count too, so the limit reads as plain nesting.
            if depth >= max_depth {
                return Err(RespError::TooDeep { max: max_depth });
            }
            if children > 0 {
                let slot = open
                    .get_mut(depth)
                    .ok_or(RespError::TooDeep { max: max_depth })?;
                *slot = (children, attribute);
                depth += 1;
                continue;
            }
            if attribute {
                // The annotated value is still to come.
                continue;
            }
        }
        // A value just ended; it may be the last child of several aggregates.
        loop {
            let Some(top) = depth.checked_sub(1).and_then(|i| open.get_mut(i)) else {
                return Ok(Some(pos));
            };
            top.0 = top.0.saturating_sub(1);
            if top.0 > 0 {
                break;
            }
            let was_attribute = top.1;
            depth -= 1;
            if was_attribute {
                // An attribute's end completes nothing: its value follows.
                break;
            }
        }
    }
}

/// Reads the header of the value at the start of `buf`, and the payload too for
/// strings, returning what it announced and the bytes it took.
fn read_head<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<(Head<'a>, usize)>, RespError> {
    let Some((&marker, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let line_max = match marker {
        b'+' | b'-' | b',' | b'(' => limits.max_bulk,
        b':' | b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|' | b'#' | b'_' => {
            NUMBER_LINE_MAX
        }
        other => return Err(RespError::UnknownType(other)),
    };
    let Some(line) = take_line(rest, line_max)? else {
        return Ok(None);
    };
    // Marker, line and CRLF all lie inside `buf`, so this cannot overflow.
    let used = line.len() + 3;
    let head = match marker {
        b'+' => Head::Scalar(Kind::Simple, line),
        b'-' => Head::Scalar(Kind::Error, line),
        b':' => {
            parse_int(line).ok_or(RespError::BadNumber)?;
            Head::Scalar(Kind::Int, line)
        }
        b',' => {
            parse_double(line).ok_or(RespError::BadDouble)?;
            Head::Scalar(Kind::Double, line)
        }
        b'(' => {
            let digits = match line {
                [b'-' | b'+', digits @ ..] => digits,
                _ => line,
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(RespError::BadBigNumber);
            }
            Head::Scalar(Kind::BigNumber, line)
        }
        b'#' => match line {
            b"t" | b"f" => Head::Scalar(Kind::Bool, line),
            _ => return Err(RespError::BadBool),
        },
        b'_' if line.is_empty() => Head::Scalar(Kind::Null, line),
        b'_' => return Err(RespError::BadNull),
        b'$' | b'!' | b'=' => return read_blob(buf, marker, line, used, limits),
        _ => read_aggregate(marker, line, limits)?,
    };
    Ok(Some((head, used)))
}

/// Reads a length-prefixed string whose header line, `line`, ends at `start`.
fn read_blob<'a>(
    buf: &'a [u8],
    marker: u8,
    line: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(Head<'a>, usize)>, RespError> {
    if line == b"?" {
        return Err(RespError::Streamed(marker));
    }
    if marker == b'$' && line == b"-1" {
        return Ok(Some((Head::Scalar(Kind::Null, &[]), start)));
    }
    let declared = parse_len(line)?;
    let too_large = RespError::TooLarge {
        declared,
        max: limits.max_bulk,
    };
    let len = usize::try_from(declared)
        .ok()
        .filter(|&len| len <= limits.max_bulk)
        .ok_or(too_large)?;
    if marker == b'=' && len < 4 {
        return Err(RespError::BadVerbatim);
    }
    let end = start.checked_add(len).ok_or(too_large)?;
    let total = end.checked_add(2).ok_or(too_large)?;
    let (Some(payload), Some(tail)) = (buf.get(start..end), buf.get(end..total)) else {
        return Ok(None);
    };
    if tail != b"\r\n" {
        return Err(RespError::MissingCrlf);
    }
    let kind = match marker {
        b'$' => Kind::Bulk,
        b'!' => Kind::BulkError,
        _ if payload.get(3) == Some(&b':') => Kind::Verbatim,
        _ => return Err(RespError::BadVerbatim),
    };
    Ok(Some((Head::Scalar(kind, payload), total)))
}

/// Interprets the header line of an aggregate or attribute.
fn read_aggregate(marker: u8, line: &[u8], limits: &Limits) -> Result<Head<'static>, RespError> {
    if line == b"?" {
        return Err(RespError::Streamed(marker));
    }
    if marker == b'*' && line == b"-1" {
        return Ok(Head::Scalar(Kind::Null, &[]));
    }
    let declared = parse_len(line)?;
    let values = if matches!(marker, b'%' | b'|') {
        declared.saturating_mul(2)
    } else {
        declared
    };
    let count = usize::try_from(values)
        .ok()
        .filter(|&n| n <= limits.max_elements)
        .ok_or(RespError::TooManyElements {
            declared: values,
            max: limits.max_elements,
        })?;
    Ok(match marker {
        b'*' => Head::Aggregate(Kind::Array, count),
        b'%' => Head::Aggregate(Kind::Map, count),
        b'~' => Head::Aggregate(Kind::Set, count),
        b'>' => Head::Aggregate(Kind::Push, count),
        _ => Head::Attribute(count),
    })
}

/// Splits off the line at the start of `buf`, without its CRLF.
fn take_line(buf: &[u8], max: usize) -> Result<Option<&[u8]>, RespError> {
    // A terminator at index `max` still ends an acceptable line; anything found
    // later would belong to a line that is refused anyway.
    let window = buf.get(..max.saturating_add(1)).unwrap_or(buf);
    let Some(at) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() > max {
            Err(RespError::LineTooLong { max })
        } else {
            Ok(None)
        };
    };
    let Some((line, end)) = buf.split_at_checked(at) else {
        return Ok(None);
    };
    match end {
        [b'\r', b'\n', ..] => Ok(Some(line)),
        [b'\r'] => Ok(None),
        _ => Err(RespError::MissingCrlf),
    }
}

/// Parses a signed decimal that must fit in an `i64`.
fn parse_int(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line {
        [b'-', digits @ ..] => (true, digits),
        [b'+', digits @ ..] => (false, digits),
        _ => (false, line),
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0i64, |acc, &b| {
        let digit = i64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        let shifted = acc.checked_mul(10)?;
        // Accumulating negative values reaches i64::MIN without overflowing.
        if negative {
            shifted.checked_sub(digit)
        } else {
            shifted.checked_add(digit)
        }
    })
}

/// Parses a length or count, which may not be negative.
fn parse_len(line: &[u8]) -> Result<u64, RespError> {
    parse_int(line)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(RespError::BadNumber)
}

/// Parses a double line; `inf`, `-inf` and `nan` are among what `f64` accepts.
fn parse_double(line: &[u8]) -> Option<f64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// A borrowed view of one complete, already validated reply or child value.
///
/// Copying it is cheap; every accessor re-reads the underlying bytes and none of
/// them allocates or panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    kind: Kind,
    // String payload, the line of other scalars, or the encoded child values.
    data: &'a [u8],
    // Child values of an aggregate, map entries counting twice; 0 for scalars.
    children: usize,
}

impl<'a> Value<'a> {
    fn new(kind: Kind, data: &'a [u8], children: usize) -> Self {
        Value {
            kind,
            data,
            children,
        }
    }

    /// Views the value at the start of `buf`, which must have passed [`scan`];
    /// leading attributes are skipped.
    fn read(buf: &'a [u8]) -> Option<Value<'a>> {
        let mut pos = 0usize;
        loop {
            let rest = buf.get(pos..)?;
            let (head, used) = read_head(rest, &TRUSTED).ok()??;
            match head {
                Head::Scalar(kind, data) => return Some(Value::new(kind, data, 0)),
                Head::Aggregate(kind, children) => {
                    return Some(Value::new(kind, rest.get(used..)?, children))
                }
                Head::Attribute(children) => {
                    pos = pos.checked_add(used)?;
                    for _ in 0..children {
                        let len = scan(buf.get(pos..)?, &TRUSTED).ok()??;
                        pos = pos.checked_add(len)?;
                    }
                }
            }
        }
    }

    /// The RESP3 type of this value.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this is a null, in either its RESP3 or RESP2 form.
    pub fn is_null(&self) -> bool {
        self.kind == Kind::Null
    }

    /// Whether this is an array, map, set or push.
    pub fn is_aggregate(&self) -> bool {
        matches!(self.kind, Kind::Array | Kind::Map | Kind::Set | Kind::Push)
    }

    /// Whether this is a simple or bulk error.
    pub fn is_error(&self) -> bool {
        matches!(self.kind, Kind::Error | Kind::BulkError)
    }

    /// The bytes of a simple, bulk or verbatim string (without its format
    /// prefix), or the decimal text of a big number.
    ///
    /// Errors return `None` so that an error reply is never mistaken for data;
    /// see [`Value::error_text`].
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Simple | Kind::Bulk | Kind::BigNumber => Some(self.data),
            Kind::Verbatim => self.data.get(4..),
            _ => None,
        }
    }

    /// [`Value::as_bytes`], if those bytes are UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The value of an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int => parse_int(self.data),
            _ => None,
        }
    }

    /// The value of a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.kind {
            Kind::Bool => Some(self.data == b"t"),
            _ => None,
        }
    }

    /// The value of a double.
    pub fn as_double(&self) -> Option<f64> {
        match self.kind {
            Kind::Double => parse_double(self.data),
            _ => None,
        }
    }

    /// The three-byte format of a verbatim string, such as `txt` or `mkd`.
    pub fn verbatim_format(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Verbatim => self.data.get(..3),
            _ => None,
        }
    }

    /// The message of a simple or bulk error, code included.
    pub fn error_text(&self) -> Option<&'a [u8]> {
        self.is_error().then_some(self.data)
    }

    /// The first word of an error's message, by convention its code, such as
    /// `ERR`, `WRONGTYPE` or `MOVED`.
    pub fn error_code(&self) -> Option<&'a [u8]> {
        let text = self.error_text()?;
        text.split(|&b| b == b' ').next()
    }

    /// The number of child values of an aggregate, which [`Value::items`] yields;
    /// a map of `n` entries has `2 * n`. Scalars and nulls have none.
    pub fn len(&self) -> usize {
        self.children
    }

    /// Whether [`Value::len`] is zero.
    pub fn is_empty(&self) -> bool {
        self.children == 0
    }

    /// The child values of an aggregate, in order; empty for scalars. A map
    /// yields key, value, key, value.
    pub fn items(&self) -> Items<'a> {
        Items {
            rest: self.data,
            remaining: self.children,
        }
    }

    /// Consecutive pairs of child values: the entries of a map.
    pub fn pairs(&self) -> Pairs<'a> {
        Pairs {
            items: self.items(),
        }
    }

    /// The value stored under the string key `key` in a map.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        if self.kind != Kind::Map {
            return None;
        }
        self.pairs()
            .find(|(k, _)| k.as_bytes() == Some(key))
            .map(|(_, v)| v)
    }

    /// Whether this is a push whose first element is the string `name`, compared
    /// ignoring ASCII case, as in `is_push_of(b"smessage")`.
    pub fn is_push_of(&self, name: &[u8]) -> bool {
        self.kind == Kind::Push
            && self
                .items()
                .next()
                .and_then(|first| first.as_bytes())
                .is_some_and(|first| first.eq_ignore_ascii_case(name))
    }
}

/// Iterator over the child values of an aggregate; see [`Value::items`].
///
/// It re-walks bytes that were validated when the reply was parsed, and ends
/// early rather than panic should they somehow not parse.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Items<'a> {
    fn split_next(&mut self) -> Option<Value<'a>> {
        let len = scan(self.rest, &TRUSTED).ok()??;
        let (this, rest) = self.rest.split_at_checked(len)?;
        self.rest = rest;
        Value::read(this)
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        match self.split_next() {
            Some(value) => {
                self.remaining -= 1;
                Some(value)
            }
            None => {
                self.remaining = 0;
                self.rest = &[];
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl FusedIterator for Items<'_> {}

/// Iterator over key, value pairs of a map; see [`Value::pairs`].
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    items: Items<'a>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (Value<'a>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.items.next()?;
        let value = self.items.next()?;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.items.remaining / 2))
    }
}

impl FusedIterator for Pairs<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    /// Parses a buffer that must hold exactly one value.
    fn one(wire: &[u8]) -> Value<'_> {
        let (value, len) = parse(wire, &lim()).unwrap().unwrap();
        assert_eq!(
            len,
            wire.len(),
            "length of {:?}",
            String::from_utf8_lossy(wire)
        );
        assert_eq!(frame_len(wire, &lim()), Ok(Some(wire.len())));
        value
    }

    fn fails(wire: &[u8], limits: &Limits) -> RespError {
        let err = frame_len(wire, limits).unwrap_err();
        assert_eq!(parse(wire, limits).unwrap_err(), err);
        err
    }

    fn encode(args: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_command(&mut out, args);
        out
    }

    /// Reads every accessor of `value` and its descendants; returns the number
    /// of values visited. Also checks that every aggregate yields what it declared.
    fn walk(value: Value<'_>) -> usize {
        let _ = (
            value.as_bytes(),
            value.as_str(),
            value.as_int(),
            value.as_bool(),
        );
        let _ = (value.as_double(), value.error_text(), value.error_code());
        let _ = (
            value.verbatim_format(),
            value.is_push_of(b"x"),
            value.get(b"x"),
        );
        assert_eq!(value.items().count(), value.len());
        assert_eq!(value.pairs().count(), value.len() / 2);
        1 + value.items().map(walk).sum::<usize>()
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(
            &encode(&[b"SET", b"key", b"value"])[..],
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
        );
        assert_eq!(&encode(&[])[..], b"*0\r\n");
        assert_eq!(&encode(&[b""])[..], b"*1\r\n$0\r\n\r\n");
        assert_eq!(&encode(&[b"a\r\nb"])[..], b"*1\r\n$4\r\na\r\nb\r\n");
        let mut out = BytesMut::from(&b"prefix"[..]);
        encode_command(&mut out, &[b"PING"]);
        assert_eq!(&out[..], b"prefix*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn command_len_is_exact_across_digit_boundaries() {
        for size in [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 10_000, 123_456] {
            let arg = vec![b'x'; size];
            for count in [1, 9, 10, 11] {
                let args: Vec<&[u8]> = vec![&arg; count];
                let out = encode(&args);
                assert_eq!(command_len(&args), out.len(), "size {size} count {count}");
                let header = format!("${size}\r\n");
                assert!(out.windows(header.len()).any(|w| w == header.as_bytes()));
            }
        }
        assert_eq!(header_len(usize::MAX), 23);
        let mut out = BytesMut::new();
        put_header(&mut out, b'*', usize::MAX);
        assert_eq!(&out[..], format!("*{}\r\n", usize::MAX).as_bytes());
    }

    #[test]
    fn simple_strings_and_errors() {
        let v = one(b"+OK\r\n");
        assert_eq!(
            (v.kind(), v.as_bytes(), v.as_str()),
            (Kind::Simple, Some(&b"OK"[..]), Some("OK"))
        );
        assert_eq!(one(b"+\r\n").as_bytes(), Some(&b""[..]));
        let e = one(b"-WRONGTYPE Operation against a key\r\n");
        assert_eq!(e.kind(), Kind::Error);
        assert!(e.is_error());
        assert_eq!(e.as_bytes(), None);
        assert_eq!(
            e.error_text(),
            Some(&b"WRONGTYPE Operation against a key"[..])
        );
        assert_eq!(e.error_code(), Some(&b"WRONGTYPE"[..]));
        assert_eq!(one(b"-ERR\r\n").error_code(), Some(&b"ERR"[..]));
        let be = one(b"!15\r\nSYNTAX bad\r\narg\r\n");
        assert_eq!(be.kind(), Kind::BulkError);
        assert_eq!(be.error_text(), Some(&b"SYNTAX bad\r\narg"[..]));
        assert_eq!(be.error_code(), Some(&b"SYNTAX"[..]));
        assert_eq!(v.error_text(), None);
    }

    #[test]
    fn integers() {
        for (wire, n) in [
            (&b":0\r\n"[..], 0),
            (b":-1\r\n", -1),
            (b":+17\r\n", 17),
            (b":007\r\n", 7),
            (b":9223372036854775807\r\n", i64::MAX),
            (b":-9223372036854775808\r\n", i64::MIN),
        ] {
            let v = one(wire);
            assert_eq!((v.kind(), v.as_int()), (Kind::Int, Some(n)));
            assert_eq!(v.as_bytes(), None);
        }
        for bad in [
            &b":\r\n"[..],
            b":-\r\n",
            b":1a\r\n",
            b": 1\r\n",
            b":9223372036854775808\r\n",
        ] {
            assert_eq!(fails(bad, &lim()), RespError::BadNumber);
        }
        assert_eq!(
            fails(b":-9223372036854775809\r\n", &lim()),
            RespError::BadNumber
        );
    }

    #[test]
    fn bulk_strings_and_nulls() {
        let v = one(b"$5\r\nhello\r\n");
        assert_eq!((v.kind(), v.as_bytes()), (Kind::Bulk, Some(&b"hello"[..])));
        assert_eq!(one(b"$0\r\n\r\n").as_bytes(), Some(&b""[..]));
        assert_eq!(
            one(b"$4\r\n\r\n\r\n\r\n").as_bytes(),
            Some(&b"\r\n\r\n"[..])
        );
        assert_eq!(one(b"$2\r\n\xff\x00\r\n").as_str(), None);
        for null in [&b"_\r\n"[..], b"$-1\r\n", b"*-1\r\n"] {
            let v = one(null);
            assert!(v.is_null());
            assert_eq!((v.kind(), v.len(), v.as_bytes()), (Kind::Null, 0, None));
            assert_eq!(v.items().next(), None);
        }
        assert_eq!(fails(b"_x\r\n", &lim()), RespError::BadNull);
        assert_eq!(fails(b"$-2\r\n", &lim()), RespError::BadNumber);
        assert_eq!(fails(b"!-1\r\n", &lim()), RespError::BadNumber);
        assert_eq!(fails(b"%-1\r\n", &lim()), RespError::BadNumber);
        assert_eq!(fails(b"$3\r\nabcd\r\n", &lim()), RespError::MissingCrlf);
        assert_eq!(fails(b"$3\r\nab\r\nX", &lim()), RespError::MissingCrlf);
    }

    #[test]
    fn booleans_doubles_big_numbers_verbatim() {
        assert_eq!(one(b"#t\r\n").as_bool(), Some(true));
        assert_eq!(one(b"#f\r\n").as_bool(), Some(false));
        assert_eq!(one(b"#f\r\n").kind(), Kind::Bool);
        assert_eq!(fails(b"#x\r\n", &lim()), RespError::BadBool);
        assert_eq!(fails(b"#\r\n", &lim()), RespError::BadBool);
        for (wire, x) in [
            (&b",1.5\r\n"[..], 1.5),
            (b",-0.25\r\n", -0.25),
            (b",10\r\n", 10.0),
            (b",1e-3\r\n", 0.001),
            (b",1.2E+3\r\n", 1200.0),
            (b",inf\r\n", f64::INFINITY),
            (b",-inf\r\n", f64::NEG_INFINITY),
        ] {
            let v = one(wire);
            assert_eq!((v.kind(), v.as_double()), (Kind::Double, Some(x)));
        }
        assert!(one(b",nan\r\n").as_double().unwrap().is_nan());
        for bad in [
            &b",\r\n"[..],
            b",1.2.3\r\n",
            b",abc\r\n",
            b", 1\r\n",
            b",\xff\r\n",
        ] {
            assert_eq!(fails(bad, &lim()), RespError::BadDouble);
        }
        let big = one(b"(-3492890328409238509324850943850943825024385\r\n");
        assert_eq!(big.kind(), Kind::BigNumber);
        assert_eq!(
            big.as_bytes(),
            Some(&b"-3492890328409238509324850943850943825024385"[..])
        );
        for bad in [&b"(\r\n"[..], b"(-\r\n", b"(12x\r\n", b"(1.5\r\n"] {
            assert_eq!(fails(bad, &lim()), RespError::BadBigNumber);
        }
        let verbatim = one(b"=10\r\ntxt:hi\r\nyo\r\n");
        assert_eq!(verbatim.kind(), Kind::Verbatim);
        assert_eq!(verbatim.as_bytes(), Some(&b"hi\r\nyo"[..]));
        assert_eq!(verbatim.verbatim_format(), Some(&b"txt"[..]));
        assert_eq!(one(b"=4\r\nmkd:\r\n").as_bytes(), Some(&b""[..]));
        assert_eq!(fails(b"=3\r\n", &lim()), RespError::BadVerbatim);
        assert_eq!(fails(b"=5\r\ntxt-x\r\n", &lim()), RespError::BadVerbatim);
    }

    #[test]
    fn aggregates() {
        let array = one(b"*3\r\n:1\r\n$3\r\ntwo\r\n*1\r\n+three\r\n");
        assert_eq!(
            (array.kind(), array.len(), array.is_aggregate()),
            (Kind::Array, 3, true)
        );
        let items: Vec<_> = array.items().collect();
        assert_eq!(items[0].as_int(), Some(1));
        assert_eq!(items[1].as_bytes(), Some(&b"two"[..]));
        assert_eq!(items[2].items().next().unwrap().as_str(), Some("three"));

        let map = one(b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n#t\r\n");
        assert_eq!((map.kind(), map.len()), (Kind::Map, 4));
        assert_eq!(map.pairs().count(), 2);
        assert_eq!(map.get(b"first").and_then(|v| v.as_int()), Some(1));
        assert_eq!(map.get(b"second").and_then(|v| v.as_bool()), Some(true));
        assert_eq!(map.get(b"third"), None);
        assert_eq!(array.get(b"two"), None);

        let set = one(b"~2\r\n+a\r\n+b\r\n");
        assert_eq!((set.kind(), set.len()), (Kind::Set, 2));
        let push = one(b">2\r\n+invalidate\r\n*1\r\n$3\r\nkey\r\n");
        assert_eq!(push.kind(), Kind::Push);
        assert!(push.is_push_of(b"INVALIDATE"));

        for empty in [&b"*0\r\n"[..], b"%0\r\n", b"~0\r\n", b">0\r\n"] {
            let v = one(empty);
            assert!(v.is_empty() && v.is_aggregate());
            assert_eq!(v.items().next(), None);
        }
        assert_eq!(one(b"+x\r\n").len(), 0);
        assert!(!one(b"+x\r\n").is_aggregate());
    }

    #[test]
    fn nested_maps_and_pushes_iterate() {
        let wire = b"%2\r\n$5\r\nouter\r\n%1\r\n+inner\r\n*2\r\n:1\r\n:2\r\n\
                     +list\r\n>3\r\n$8\r\nsmessage\r\n$8\r\nchan:bob\r\n$5\r\nhello\r\n";
        let map = one(wire);
        let inner = map.get(b"outer").unwrap();
        assert_eq!(inner.kind(), Kind::Map);
        let numbers: Vec<_> = inner
            .get(b"inner")
            .unwrap()
            .items()
            .map(|v| v.as_int())
            .collect();
        assert_eq!(numbers, [Some(1), Some(2)]);
        let push = map.get(b"list").unwrap();
        assert!(push.is_push_of(b"smessage"));
        assert!(push.is_push_of(b"SMessage"));
        assert!(!push.is_push_of(b"message"));
        let words: Vec<_> = push.items().filter_map(|v| v.as_str()).collect();
        assert_eq!(words, ["smessage", "chan:bob", "hello"]);
        assert_eq!(walk(map), 12);
    }

    #[test]
    fn is_push_of_needs_a_push_with_a_string_head() {
        assert!(!one(b"*2\r\n$8\r\nsmessage\r\n+x\r\n").is_push_of(b"smessage"));
        assert!(!one(b">0\r\n").is_push_of(b"smessage"));
        assert!(!one(b">1\r\n:1\r\n").is_push_of(b"1"));
        assert!(one(b">1\r\n+pong\r\n").is_push_of(b"pong"));
    }

    #[test]
    fn attributes_are_counted_and_skipped() {
        let wire = b"|1\r\n+ttl\r\n:30\r\n*2\r\n:1\r\n:2\r\n";
        let v = one(wire);
        assert_eq!((v.kind(), v.len()), (Kind::Array, 2));
        assert_eq!(v.items().filter_map(|i| i.as_int()).sum::<i64>(), 3);

        // An attribute on a child, whose own values are aggregates.
        let wire = b"*2\r\n|2\r\n+a\r\n*1\r\n:9\r\n+b\r\n%1\r\n+k\r\n+v\r\n$2\r\nhi\r\n+end\r\n";
        let v = one(wire);
        let items: Vec<_> = v.items().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_bytes(), Some(&b"hi"[..]));
        assert_eq!(items[1].as_bytes(), Some(&b"end"[..]));

        // Empty and stacked attributes before a scalar; an attribute on a push.
        assert_eq!(one(b"|0\r\n:5\r\n").as_int(), Some(5));
        assert_eq!(one(b"|1\r\n+a\r\n+b\r\n|0\r\n:5\r\n").as_int(), Some(5));
        assert!(one(b"|1\r\n+a\r\n+b\r\n>1\r\n+pong\r\n").is_push_of(b"pong"));

        // An attribute alone is not a reply yet.
        assert_eq!(frame_len(b"|1\r\n+a\r\n+b\r\n", &lim()), Ok(None));
        assert_eq!(
            frame_len(b"|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n", &lim()),
            Ok(Some(16))
        );
    }

    #[test]
    fn malformed_input_is_refused() {
        let cases: &[(&[u8], RespError)] = &[
            (b"A\r\n", RespError::UnknownType(b'A')),
            (b"\r\n", RespError::UnknownType(b'\r')),
            (b"*1\r\n?\r\n", RespError::UnknownType(b'?')),
            (b"+OK\rX", RespError::MissingCrlf),
            (b"+OK\n", RespError::MissingCrlf),
            (b"+O\nK\r\n", RespError::MissingCrlf),
            (b"*x\r\n", RespError::BadNumber),
            (b"*\r\n", RespError::BadNumber),
            (b"$\r\n", RespError::BadNumber),
            (b"$+\r\n", RespError::BadNumber),
            (b"$?\r\n", RespError::Streamed(b'$')),
            (b"*?\r\n", RespError::Streamed(b'*')),
            (b"%?\r\n", RespError::Streamed(b'%')),
            (b"=?\r\n", RespError::Streamed(b'=')),
        ];
        for (wire, expected) in cases {
            assert_eq!(
                fails(wire, &lim()),
                *expected,
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        assert_eq!(frame_len(b"", &lim()), Ok(None));
        assert_eq!(frame_len(b"+OK\r", &lim()), Ok(None));
    }

    #[test]
    fn every_prefix_of_a_composite_reply_needs_more() {
        let wire: &[u8] = b"|1\r\n+meta\r\n,0.5\r\n%3\r\n$2\r\nid\r\n:42\r\n+tags\r\n~2\r\n\
            =8\r\ntxt:a\r\nb\r\n(123\r\n+ok\r\n*5\r\n_\r\n#t\r\n!3\r\nERR\r\n$-1\r\n>1\r\n-no\r\n";
        for cut in 0..wire.len() {
            assert_eq!(frame_len(&wire[..cut], &lim()), Ok(None), "cut at {cut}");
            assert_eq!(parse(&wire[..cut], &lim()), Ok(None), "cut at {cut}");
        }
        let v = one(wire);
        assert_eq!(walk(v), 15);
        assert_eq!(v.get(b"id").and_then(|v| v.as_int()), Some(42));
        let tags: Vec<_> = v.get(b"tags").unwrap().items().collect();
        assert_eq!(tags[0].as_bytes(), Some(&b"a\r\nb"[..]));
        assert_eq!(tags[1].as_bytes(), Some(&b"123"[..]));
        let last: Vec<_> = v.get(b"ok").unwrap().items().map(|i| i.kind()).collect();
        assert_eq!(
            last,
            [
                Kind::Null,
                Kind::Bool,
                Kind::BulkError,
                Kind::Null,
                Kind::Push
            ]
        );
    }

    #[test]
    fn pipelined_replies_split_cleanly() {
        let buf = b"+OK\r\n:1\r\n$1\r\n1\r\n+partial";
        let mut rest = &buf[..];
        let mut seen = Vec::new();
        while let Some((value, len)) = parse(rest, &lim()).unwrap() {
            seen.push(value.kind());
            rest = &rest[len..];
        }
        assert_eq!(seen, [Kind::Simple, Kind::Int, Kind::Bulk]);
        assert_eq!(rest, b"+partial");
    }

    #[test]
    fn limits_apply_before_the_payload_arrives() {
        let small = Limits {
            max_bulk: 10,
            max_elements: 4,
            max_depth: 8,
        };
        assert_eq!(one(b"$10\r\n0123456789\r\n").len(), 0);
        assert_eq!(
            parse(b"$10\r\n0123456789\r\n", &small).unwrap().unwrap().1,
            17
        );
        let too_large = RespError::TooLarge {
            declared: 11,
            max: 10,
        };
        assert_eq!(fails(b"$11\r\n", &small), too_large);
        assert_eq!(fails(b"!11\r\n", &small), too_large);
        assert_eq!(fails(b"=11\r\n", &small), too_large);
        assert_eq!(fails(b"*1\r\n$11\r\n", &small), too_large);
        assert_eq!(frame_len(b"$10\r\n", &small), Ok(None));

        assert_eq!(frame_len(b"*4\r\n", &small), Ok(None));
        let many = |declared| RespError::TooManyElements { declared, max: 4 };
        assert_eq!(fails(b"*5\r\n", &small), many(5));
        assert_eq!(fails(b"~5\r\n", &small), many(5));
        assert_eq!(fails(b">5\r\n", &small), many(5));
        assert_eq!(frame_len(b"%2\r\n", &small), Ok(None));
        assert_eq!(fails(b"%3\r\n", &small), many(6));
        assert_eq!(fails(b"|3\r\n", &small), many(6));

        // Text lines may not grow without bound while waiting for CRLF.
        assert_eq!(frame_len(b"+0123456789", &small), Ok(None));
        assert_eq!(
            fails(b"+0123456789x", &small),
            RespError::LineTooLong { max: 10 }
        );
        assert_eq!(parse(b"+0123456789\r\n", &small).unwrap().unwrap().1, 13);
        assert_eq!(
            fails(b"-01234567890", &small),
            RespError::LineTooLong { max: 10 }
        );
        let long_number = [b':'; 40];
        assert_eq!(
            fails(&long_number, &lim()),
            RespError::LineTooLong { max: 32 }
        );
        let mut zeros = vec![b'$'];
        zeros.extend([b'0'; 32]);
        assert_eq!(frame_len(&zeros, &lim()), Ok(None));
        zeros.push(b'0');
        assert_eq!(fails(&zeros, &lim()), RespError::LineTooLong { max: 32 });
    }

    #[test]
    fn huge_declared_lengths_error_or_wait_without_overflow() {
        let unlimited = Limits {
            max_bulk: usize::MAX,
            max_elements: usize::MAX,
            max_depth: 8,
        };
        assert_eq!(frame_len(b"$9223372036854775807\r\n", &unlimited), Ok(None));
        assert_eq!(frame_len(b"*9223372036854775807\r\n", &unlimited), Ok(None));
        assert_eq!(frame_len(b"%9223372036854775807\r\n", &unlimited), Ok(None));
        assert_eq!(
            fails(b"$99999999999999999999\r\n", &unlimited),
            RespError::BadNumber
        );
        assert_eq!(
            fails(b"$9223372036854775807\r\n", &lim()),
            RespError::TooLarge {
                declared: i64::MAX as u64,
                max: 64 << 20
            }
        );
        assert_eq!(
            fails(b"%9223372036854775807\r\n", &lim()),
            RespError::TooManyElements {
                declared: u64::MAX - 1,
                max: 1 << 20
            }
        );
    }

    #[test]
    fn depth_bomb_is_refused_without_recursion() {
        let bomb = b"*1\r\n".repeat(10_000);
        assert_eq!(fails(&bomb, &lim()), RespError::TooDeep { max: 8 });
        let wide_open = Limits {
            max_depth: usize::MAX,
            ..lim()
        };
        assert_eq!(
            fails(&bomb, &wide_open),
            RespError::TooDeep { max: DEPTH_CEILING }
        );
        let attributes = b"|1\r\n".repeat(10_000);
        assert_eq!(fails(&attributes, &lim()), RespError::TooDeep { max: 8 });

        let nested = |levels: usize| {
            let mut wire = b"*1\r\n".repeat(levels);
            wire.extend_from_slice(b":7\r\n");
            wire
        };
        let exact = nested(8);
        let mut value = one(&exact);
        for _ in 0..8 {
            value = value.items().next().unwrap();
        }
        assert_eq!(value.as_int(), Some(7));
        assert_eq!(fails(&nested(9), &lim()), RespError::TooDeep { max: 8 });
        let mut empty_at_limit = b"*1\r\n".repeat(8);
        empty_at_limit.extend_from_slice(b"*0\r\n");
        assert_eq!(
            fails(&empty_at_limit, &lim()),
            RespError::TooDeep { max: 8 }
        );
        let flat = Limits {
            max_depth: 1,
            ..lim()
        };
        assert_eq!(frame_len(b"*1\r\n:1\r\n", &flat), Ok(Some(8)));
        assert_eq!(fails(b"*1\r\n*0\r\n", &flat), RespError::TooDeep { max: 1 });
        let scalars_only = Limits {
            max_depth: 0,
            ..lim()
        };
        assert_eq!(frame_len(b":1\r\n", &scalars_only), Ok(Some(4)));
        assert_eq!(
            fails(b"*0\r\n", &scalars_only),
            RespError::TooDeep { max: 0 }
        );
        assert_eq!(
            fails(&nested(DEPTH_CEILING + 1), &wide_open),
            RespError::TooDeep { max: DEPTH_CEILING }
        );
        let deepest = nested(DEPTH_CEILING);
        let (value, _) = parse(&deepest, &wide_open).unwrap().unwrap();
        assert_eq!(walk(value), DEPTH_CEILING + 1);
    }

    #[test]
    fn errors_display_as_close_reasons() {
        let err: Box<dyn std::error::Error> = Box::new(RespError::TooLarge {
            declared: 9,
            max: 8,
        });
        assert_eq!(err.to_string(), "RESP: declared length 9 exceeds limit 8");
        assert_eq!(
            RespError::UnknownType(b'A').to_string(),
            "RESP: unknown type byte 0x41"
        );
        assert_eq!(
            RespError::Streamed(b'$').to_string(),
            "RESP: streamed type '$' is not supported"
        );
        assert!(RespError::TooDeep { max: 8 }.to_string().contains('8'));
    }

    #[test]
    fn items_iterator_is_fused() {
        let v = one(b"*1\r\n+a\r\n");
        let mut items = v.items();
        assert_eq!(items.size_hint(), (0, Some(1)));
        assert!(items.next().is_some());
        assert_eq!((items.next(), items.next()), (None, None));
        let mut pairs = one(b"%1\r\n+a\r\n+b\r\n").pairs();
        assert!(pairs.next().is_some());
        assert!(pairs.next().is_none());
    }

    /// A valid encoded value, built from the wire format rather than this module.
    fn valid_value() -> impl Strategy<Value = Vec<u8>> {
        let bulk = |marker: char, body: Vec<u8>| {
            let mut wire = format!("{marker}{}\r\n", body.len()).into_bytes();
            wire.extend(body);
            wire.extend_from_slice(b"\r\n");
            wire
        };
        let leaf = prop_oneof![
            "[a-zA-Z0-9 :]{0,8}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[A-Z]{1,5}( [a-z]{0,5})?".prop_map(|s| format!("-{s}\r\n").into_bytes()),
            any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            any::<f64>().prop_map(|x| format!(",{x}\r\n").into_bytes()),
            "-?[0-9]{1,40}".prop_map(|s| format!("({s}\r\n").into_bytes()),
            any::<bool>().prop_map(|b| if b {
                b"#t\r\n".to_vec()
            } else {
                b"#f\r\n".to_vec()
            }),
            Just(b"_\r\n".to_vec()),
            Just(b"$-1\r\n".to_vec()),
            Just(b"*-1\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(move |b| bulk('$', b)),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(move |b| bulk('!', b)),
            proptest::collection::vec(any::<u8>(), 0..12)
                .prop_map(move |b| { bulk('=', [&b"txt:"[..], &b].concat()) }),
        ];
        leaf.prop_recursive(4, 48, 4, |inner| {
            let list = proptest::collection::vec(inner.clone(), 0..4);
            let entries = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
            prop_oneof![
                (prop_oneof![Just('*'), Just('~'), Just('>')], list).prop_map(|(marker, items)| {
                    let mut wire = format!("{marker}{}\r\n", items.len()).into_bytes();
                    items.iter().for_each(|i| wire.extend(i));
                    wire
                }),
                (prop_oneof![Just('%'), Just('|')], entries, inner).prop_map(
                    |(marker, entries, annotated)| {
                        let mut wire = format!("{marker}{}\r\n", entries.len()).into_bytes();
                        for (k, v) in &entries {
                            wire.extend(k);
                            wire.extend(v);
                        }
                        // An attribute must be followed by the value it annotates.
                        if marker == '|' {
                            wire.extend(annotated);
                        }
                        wire
                    }
                ),
            ]
        })
    }

    /// Byte soup biased toward RESP fragments, to reach deep into the scanner.
    fn token_soup() -> impl Strategy<Value = Vec<u8>> {
        const FRAGMENTS: &[&[u8]] = &[
            b"*1\r\n",
            b"*2\r\n",
            b"%1\r\n",
            b"|1\r\n",
            b"|0\r\n",
            b">2\r\n",
            b"~1\r\n",
            b"$3\r\n",
            b"=5\r\n",
            b"!2\r\n",
            b"txt:",
            b"abc",
            b"\r\n",
            b":12\r\n",
            b"+x\r\n",
            b"_\r\n",
            b"$-1\r\n",
            b",1.5\r\n",
            b"(9\r\n",
            b"#t\r\n",
        ];
        let token = prop_oneof![
            proptest::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(token, 0..48).prop_map(|t| t.concat())
    }

    fn check_no_panic(bytes: &[u8], limits: &Limits) {
        let len = frame_len(bytes, limits);
        match parse(bytes, limits) {
            Ok(Some((value, n))) => {
                assert_eq!(len, Ok(Some(n)));
                assert!(n <= bytes.len());
                walk(value);
            }
            other => assert_eq!(other.map(|_| None), len),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_no_panic(&bytes, &lim());
        }

        #[test]
        fn resp_like_soup_never_panics(bytes in token_soup()) {
            check_no_panic(&bytes, &lim());
            let tight = Limits { max_bulk: 4, max_elements: 2, max_depth: 3 };
            check_no_panic(&bytes, &tight);
        }

        #[test]
        fn commands_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12)
        ) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let wire = encode(&refs);
            prop_assert_eq!(command_len(&refs), wire.len());
            let (value, len) = parse(&wire, &lim()).unwrap().unwrap();
            prop_assert_eq!(len, wire.len());
            prop_assert_eq!(value.kind(), Kind::Array);
            prop_assert_eq!(value.len(), refs.len());
            let back: Vec<&[u8]> = value.items().filter_map(|v| v.as_bytes()).collect();
            prop_assert_eq!(back, refs);
        }

        #[test]
        fn valid_values_frame_exactly_at_every_split(
            wire in valid_value(),
            trailing in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            for cut in 0..wire.len() {
                prop_assert_eq!(frame_len(&wire[..cut], &lim()), Ok(None));
            }
            let mut buf = wire.clone();
            buf.extend(&trailing);
            let (value, len) = parse(&buf, &lim()).unwrap().unwrap();
            prop_assert_eq!(len, wire.len());
            walk(value);
        }
    }
}
