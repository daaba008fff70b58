//! CQL column types: their protocol option codes, their names in `system_schema`, their
//! serialized forms, ordering of serialized values (for clustering keys) and conversion of CQL
//! literals into serialized values.
//!
//! Every stored cell is kept in its protocol serialization (`Vec<u8>`), so bound values pass
//! through unchanged and results need no re-encoding; this module is the one place that knows
//! what those bytes mean.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

/// A CQL column type the node can store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CqlType {
    /// `ascii`.
    Ascii,
    /// `bigint`: 8-byte signed.
    BigInt,
    /// `blob`.
    Blob,
    /// `boolean`.
    Boolean,
    /// `double`.
    Double,
    /// `float`.
    Float,
    /// `int`: 4-byte signed.
    Int,
    /// `smallint`: 2-byte signed.
    SmallInt,
    /// `tinyint`: 1-byte signed.
    TinyInt,
    /// `timestamp`: milliseconds since the epoch, 8-byte signed.
    Timestamp,
    /// `uuid`.
    Uuid,
    /// `text` (alias `varchar`).
    Text,
    /// `timeuuid`: a version 1 UUID.
    TimeUuid,
    /// `inet`: 4 or 16 bytes.
    Inet,
    /// `date`: days as a 4-byte unsigned integer with the Unix epoch at 2^31 (see
    /// [`DATE_EPOCH`]).
    Date,
    /// `list<T>`.
    List(Box<CqlType>),
    /// `set<T>`.
    Set(Box<CqlType>),
    /// `map<K, V>`.
    Map(Box<CqlType>, Box<CqlType>),
}

impl CqlType {
    /// Parses a simple type name (`text`, `bigint`, ...); collections are parsed by the CQL
    /// parser, which calls [`CqlType::collection`].
    pub(crate) fn simple(name: &str) -> Result<CqlType, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "ascii" => CqlType::Ascii,
            "bigint" => CqlType::BigInt,
            "blob" => CqlType::Blob,
            "boolean" => CqlType::Boolean,
            "double" => CqlType::Double,
            "float" => CqlType::Float,
            "int" => CqlType::Int,
            "smallint" => CqlType::SmallInt,
            "tinyint" => CqlType::TinyInt,
            "timestamp" => CqlType::Timestamp,
            "uuid" => CqlType::Uuid,
            "text" | "varchar" => CqlType::Text,
            "timeuuid" => CqlType::TimeUuid,
            "inet" => CqlType::Inet,
            "date" => CqlType::Date,
            other => {
                return Err(format!(
                    "column type '{other}' is not supported by the test node"
                ))
            }
        })
    }

    /// Builds `list`, `set` or `map` from its parameters.
    pub(crate) fn collection(name: &str, mut params: Vec<CqlType>) -> Result<CqlType, String> {
        match (name.to_ascii_lowercase().as_str(), params.len()) {
            ("list", 1) => Ok(CqlType::List(Box::new(params.remove(0)))),
            ("set", 1) => Ok(CqlType::Set(Box::new(params.remove(0)))),
            ("map", 2) => {
                let v = params.remove(1);
                Ok(CqlType::Map(Box::new(params.remove(0)), Box::new(v)))
            }
            (other, n) => Err(format!(
                "type '{other}' with {n} parameters is not supported by the test node"
            )),
        }
    }

    /// Whether this is a collection type.
    pub(crate) fn is_collection(&self) -> bool {
        matches!(
            self,
            CqlType::List(_) | CqlType::Set(_) | CqlType::Map(_, _)
        )
    }

    /// Writes the protocol `[option]` for this type (native protocol v4, section 4.2.5.2).
    pub(crate) fn write_option(&self, out: &mut Vec<u8>) {
        let code: u16 = match self {
            CqlType::Ascii => 0x0001,
            CqlType::BigInt => 0x0002,
            CqlType::Blob => 0x0003,
            CqlType::Boolean => 0x0004,
            CqlType::Double => 0x0007,
            CqlType::Float => 0x0008,
            CqlType::Int => 0x0009,
            CqlType::Timestamp => 0x000B,
            CqlType::Uuid => 0x000C,
            CqlType::Text => 0x000D,
            CqlType::TimeUuid => 0x000F,
            CqlType::Inet => 0x0010,
            CqlType::Date => 0x0011,
            CqlType::SmallInt => 0x0013,
            CqlType::TinyInt => 0x0014,
            CqlType::List(_) => 0x0020,
            CqlType::Map(_, _) => 0x0021,
            CqlType::Set(_) => 0x0022,
        };
        out.extend_from_slice(&code.to_be_bytes());
        match self {
            CqlType::List(t) | CqlType::Set(t) => t.write_option(out),
            CqlType::Map(k, v) => {
                k.write_option(out);
                v.write_option(out);
            }
            _ => {}
        }
    }

    /// Checks that `bytes` is a valid serialization of this type.
    pub(crate) fn validate(&self, bytes: &[u8]) -> Result<(), String> {
        let fixed = |n: usize| {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "expected {n} bytes for a {self} value, got {}",
                    bytes.len()
                ))
            }
        };
        match self {
            CqlType::BigInt | CqlType::Timestamp | CqlType::Double => fixed(8),
            CqlType::Int | CqlType::Float | CqlType::Date => fixed(4),
            CqlType::SmallInt => fixed(2),
            CqlType::TinyInt | CqlType::Boolean => fixed(1),
            CqlType::Uuid => fixed(16),
            CqlType::TimeUuid => {
                fixed(16)?;
                if bytes[6] >> 4 != 1 {
                    return Err("a timeuuid value must be a version 1 UUID".to_string());
                }
                Ok(())
            }
            CqlType::Inet => {
                if bytes.len() == 4 || bytes.len() == 16 {
                    Ok(())
                } else {
                    Err(format!(
                        "expected 4 or 16 bytes for an inet value, got {}",
                        bytes.len()
                    ))
                }
            }
            CqlType::Text => std::str::from_utf8(bytes)
                .map(|_| ())
                .map_err(|_| "a text value must be valid UTF-8".to_string()),
            CqlType::Ascii => {
                if bytes.is_ascii() {
                    Ok(())
                } else {
                    Err("an ascii value must be US-ASCII".to_string())
                }
            }
            CqlType::Blob => Ok(()),
            CqlType::List(t) | CqlType::Set(t) => {
                for e in decode_collection(bytes, 1)? {
                    t.validate(e[0].as_deref().ok_or("null element in a collection")?)?;
                }
                Ok(())
            }
            CqlType::Map(k, v) => {
                for e in decode_collection(bytes, 2)? {
                    k.validate(e[0].as_deref().ok_or("null key in a map")?)?;
                    v.validate(e[1].as_deref().ok_or("null value in a map")?)?;
                }
                Ok(())
            }
        }
    }

    /// Orders two serialized values of this type the way the database orders clustering keys.
    pub(crate) fn compare(&self, a: &[u8], b: &[u8]) -> Ordering {
        fn int(b: &[u8]) -> i64 {
            let mut v: i64 = if b.first().is_some_and(|x| x & 0x80 != 0) {
                -1
            } else {
                0
            };
            for x in b {
                v = (v << 8) | i64::from(*x);
            }
            v
        }
        match self {
            CqlType::BigInt
            | CqlType::Timestamp
            | CqlType::Int
            | CqlType::SmallInt
            | CqlType::TinyInt => int(a).cmp(&int(b)),
            CqlType::Double => f64_of(a).total_cmp(&f64_of(b)),
            CqlType::Float => f32_of(a).total_cmp(&f32_of(b)),
            CqlType::Boolean => a.cmp(b),
            CqlType::TimeUuid if a.len() == 16 && b.len() == 16 => timeuuid_time(a)
                .cmp(&timeuuid_time(b))
                .then_with(|| a.cmp(b)),
            _ => a.cmp(b),
        }
    }

    /// Converts a CQL literal into this type's serialization.
    pub(crate) fn serialize_literal(&self, lit: &Literal) -> Result<Vec<u8>, String> {
        let mismatch = || format!("invalid literal {lit} for a value of type {self}");
        match (self, lit) {
            (CqlType::Text, Literal::Str(s)) => Ok(s.as_bytes().to_vec()),
            (CqlType::Ascii, Literal::Str(s)) if s.is_ascii() => Ok(s.as_bytes().to_vec()),
            (CqlType::BigInt, Literal::Int(n)) => Ok(n.to_be_bytes().to_vec()),
            (CqlType::Int, Literal::Int(n)) => i32::try_from(*n)
                .map(|v| v.to_be_bytes().to_vec())
                .map_err(|_| format!("{n} is out of range for an int")),
            (CqlType::SmallInt, Literal::Int(n)) => i16::try_from(*n)
                .map(|v| v.to_be_bytes().to_vec())
                .map_err(|_| format!("{n} is out of range for a smallint")),
            (CqlType::TinyInt, Literal::Int(n)) => i8::try_from(*n)
                .map(|v| v.to_be_bytes().to_vec())
                .map_err(|_| format!("{n} is out of range for a tinyint")),
            (CqlType::Double, Literal::Int(n)) => Ok((*n as f64).to_be_bytes().to_vec()),
            (CqlType::Double, Literal::Float(f)) => Ok(f.to_be_bytes().to_vec()),
            (CqlType::Float, Literal::Int(n)) => Ok((*n as f32).to_be_bytes().to_vec()),
            (CqlType::Float, Literal::Float(f)) => Ok((*f as f32).to_be_bytes().to_vec()),
            (CqlType::Boolean, Literal::Bool(b)) => Ok(vec![u8::from(*b)]),
            (CqlType::Timestamp, Literal::Int(n)) => Ok(n.to_be_bytes().to_vec()),
            (CqlType::Timestamp, Literal::Str(s)) => parse_timestamp(s)
                .map(|ms| ms.to_be_bytes().to_vec())
                .ok_or_else(|| format!("unable to parse a timestamp from '{s}'")),
            (CqlType::Date, Literal::Str(s)) => parse_date(s)
                .map(|d| d.to_be_bytes().to_vec())
                .ok_or_else(|| format!("unable to coerce '{s}' to a formatted date (long)")),
            (CqlType::Uuid, Literal::Uuid(u)) => Ok(u.to_vec()),
            (CqlType::TimeUuid, Literal::Uuid(u)) => {
                self.validate(u)?;
                Ok(u.to_vec())
            }
            (CqlType::Blob, Literal::Blob(b)) => Ok(b.clone()),
            (CqlType::Inet, Literal::Str(s)) => match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) => Ok(a.octets().to_vec()),
                Ok(IpAddr::V6(a)) => Ok(a.octets().to_vec()),
                Err(_) => Err(format!("unable to parse an inet address from '{s}'")),
            },
            (CqlType::List(t), Literal::List(items)) => {
                let elems = items
                    .iter()
                    .map(|i| t.serialize_literal(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(encode_collection(elems.iter().map(|e| vec![e.as_slice()])))
            }
            (CqlType::Set(t), Literal::Set(items) | Literal::List(items)) => {
                let mut elems = items
                    .iter()
                    .map(|i| t.serialize_literal(i))
                    .collect::<Result<Vec<_>, _>>()?;
                elems.sort_by(|a, b| t.compare(a, b));
                elems.dedup();
                Ok(encode_collection(elems.iter().map(|e| vec![e.as_slice()])))
            }
            (CqlType::Set(_), Literal::Map(m)) if m.is_empty() => {
                Ok(encode_collection(std::iter::empty::<Vec<&[u8]>>()))
            }
            (CqlType::Map(kt, vt), Literal::Map(entries)) => {
                let mut pairs = entries
                    .iter()
                    .map(|(k, v)| Ok((kt.serialize_literal(k)?, vt.serialize_literal(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                pairs.sort_by(|a, b| kt.compare(&a.0, &b.0));
                pairs.dedup_by(|a, b| a.0 == b.0);
                Ok(encode_collection(
                    pairs.iter().map(|(k, v)| vec![k.as_slice(), v.as_slice()]),
                ))
            }
            _ => Err(mismatch()),
        }
    }
}

impl fmt::Display for CqlType {
    /// The type as `system_schema.columns.type` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CqlType::Ascii => f.write_str("ascii"),
            CqlType::BigInt => f.write_str("bigint"),
            CqlType::Blob => f.write_str("blob"),
            CqlType::Boolean => f.write_str("boolean"),
            CqlType::Double => f.write_str("double"),
            CqlType::Float => f.write_str("float"),
            CqlType::Int => f.write_str("int"),
            CqlType::SmallInt => f.write_str("smallint"),
            CqlType::TinyInt => f.write_str("tinyint"),
            CqlType::Timestamp => f.write_str("timestamp"),
            CqlType::Uuid => f.write_str("uuid"),
            CqlType::Text => f.write_str("text"),
            CqlType::TimeUuid => f.write_str("timeuuid"),
            CqlType::Inet => f.write_str("inet"),
            CqlType::Date => f.write_str("date"),
            CqlType::List(t) => write!(f, "list<{t}>"),
            CqlType::Set(t) => write!(f, "set<{t}>"),
            CqlType::Map(k, v) => write!(f, "map<{k}, {v}>"),
        }
    }
}

/// A constant in CQL text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    /// `'...'` (with `''` unescaped) or `$$...$$`.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent, or `NaN`/`Infinity`.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// A UUID constant.
    Uuid([u8; 16]),
    /// `0x...`.
    Blob(Vec<u8>),
    /// `[a, b]`.
    List(Vec<Literal>),
    /// `{a, b}`.
    Set(Vec<Literal>),
    /// `{k: v}` (and `{}`).
    Map(Vec<(Literal, Literal)>),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
            Literal::Uuid(u) => f.write_str(&format_uuid(u)),
            Literal::Blob(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Literal::List(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Literal::Set(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
            Literal::Map(entries) => {
                let parts: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
        }
    }
}

fn f64_of(b: &[u8]) -> f64 {
    b.try_into().map(f64::from_be_bytes).unwrap_or(f64::NAN)
}

fn f32_of(b: &[u8]) -> f32 {
    b.try_into().map(f32::from_be_bytes).unwrap_or(f32::NAN)
}

/// The 60-bit timestamp of a version 1 UUID.
fn timeuuid_time(u: &[u8]) -> u64 {
    let low = u64::from(u32::from_be_bytes([u[0], u[1], u[2], u[3]]));
    let mid = u64::from(u16::from_be_bytes([u[4], u[5]]));
    let high = u64::from(u16::from_be_bytes([u[6], u[7]]) & 0x0fff);
    (high << 48) | (mid << 32) | low
}

/// Serializes a collection (protocol v4): `[int n]` then every element as `[bytes]`; a map
/// entry is two elements.
pub(crate) fn encode_collection<'a>(items: impl Iterator<Item = Vec<&'a [u8]>>) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    let mut n: i32 = 0;
    for parts in items {
        n += 1;
        for p in parts {
            out.extend_from_slice(&(p.len() as i32).to_be_bytes());
            out.extend_from_slice(p);
        }
    }
    out[..4].copy_from_slice(&n.to_be_bytes());
    out
}

/// Splits a serialized collection into entries of `arity` elements (1 for list and set, 2 for
/// map); a null element is `None`.
pub(crate) fn decode_collection(
    bytes: &[u8],
    arity: usize,
) -> Result<Vec<Vec<Option<Vec<u8>>>>, String> {
    let bad = || "malformed collection value".to_string();
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = bytes.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let count = i32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
    if count < 0 {
        return Err(bad());
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let mut entry = Vec::with_capacity(arity);
        for _ in 0..arity {
            let len = i32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
            if len < 0 {
                entry.push(None);
            } else {
                entry.push(Some(take(len as usize)?.to_vec()));
            }
        }
        out.push(entry);
    }
    if pos != bytes.len() {
        return Err(bad());
    }
    Ok(out)
}

/// Formats 16 bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub(crate) fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub(crate) fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The serialized `date` of 1970-01-01. A `date` is "an unsigned integer representing days
/// with epoch centered at 2^31 (unix epoch January 1st, 1970)" (CQL native protocol v4
/// specification, section 6.17 "date"; the DataStax C++ driver manual, "The date and time
/// Types": "The date type uses an unsigned 32-bit integer ... to represent the number of days
/// with Epoch centered at 2^31"). Serialized big-endian, so byte order is date order.
pub(crate) const DATE_EPOCH: u32 = 1 << 31;

/// The serialized `date` of the day holding `ms` milliseconds since the Unix epoch (UTC).
pub(crate) fn date_of_millis(ms: i64) -> u32 {
    (ms.div_euclid(86_400_000) + i64::from(DATE_EPOCH)) as u32
}

/// Parses a `date` literal, `'yyyy-mm-dd'` (the DataStax CQL reference, "Date column": "date
/// string format: <yyyy>-<mm>-<dd>"), into its serialized value; an impossible day (such as
/// February 30th) is refused.
pub(crate) fn parse_date(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.trim().split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return None;
    };
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(m - 1) as usize] {
        return None;
    }
    u32::try_from(days_from_civil(y, m, d) + i64::from(DATE_EPOCH)).ok()
}

/// Parses the timestamp strings CQL accepts: `yyyy-mm-dd`, optionally followed by
/// `[ T]HH:MM[:SS[.fff]]` and a zone (`Z`, `+hhmm`, `+hh:mm`); no zone means UTC. Returns
/// milliseconds since the epoch.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            t.parse().ok()
        }
    };
    let (date, rest) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], s[i + 1..].trim()),
        None => (s, ""),
    };
    let dparts: Vec<&str> = date.split('-').collect();
    if dparts.len() != 3 {
        return None;
    }
    let (y, mo, d) = (num(dparts[0])?, num(dparts[1])?, num(dparts[2])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    if rest.is_empty() {
        return Some(ms);
    }
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = (rest[..zone_at].trim(), rest[zone_at..].trim());
    let tparts: Vec<&str> = time.split(':').collect();
    if !(2..=3).contains(&tparts.len()) {
        return None;
    }
    let (h, mi) = (num(tparts[0])?, num(tparts[1])?);
    let (sec, frac_ms) = match tparts.get(2) {
        None => (0, 0),
        Some(sp) => match sp.split_once('.') {
            None => (num(sp)?, 0),
            Some((a, b)) => {
                let digits: String = b.chars().chain("000".chars()).take(3).collect();
                (num(a)?, num(&digits)?)
            }
        },
    };
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    ms += ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms;
    if zone.is_empty() || zone.eq_ignore_ascii_case("z") {
        return Some(ms);
    }
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let z: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if z.len() != 4 {
        return None;
    }
    let offset_min = num(&z[..2])? * 60 + num(&z[2..])?;
    Some(ms - sign * offset_min * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_utc_and_with_zones() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(
            parse_timestamp("2024-03-01 12:30:00"),
            Some(1_709_296_200_000)
        );
        assert_eq!(
            parse_timestamp("2024-03-01T14:30:00.5+02:00"),
            Some(1_709_296_200_500)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn dates_count_days_from_an_epoch_at_two_to_the_31() {
        assert_eq!(parse_date("1970-01-01"), Some(1 << 31));
        assert_eq!(parse_date("1969-12-31"), Some((1 << 31) - 1));
        // 2024-03-01 is 19783 days after the epoch (`date -u -d 2024-03-01 +%s` / 86400).
        assert_eq!(parse_date("2024-03-01"), Some((1 << 31) + 19_783));
        assert_eq!(parse_date("2024-02-29"), Some((1 << 31) + 19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-03-01 10:00"), None);
        assert_eq!(date_of_millis(1_709_296_200_000), (1 << 31) + 19_783);
        assert_eq!(date_of_millis(-1), (1 << 31) - 1);
        let date = CqlType::simple("date").unwrap();
        assert_eq!(
            date.serialize_literal(&Literal::Str("2024-03-01".into())),
            Ok(((1u32 << 31) + 19_783).to_be_bytes().to_vec())
        );
        assert!(date.validate(&[0, 0, 0]).is_err());
        let mut option = Vec::new();
        date.write_option(&mut option);
        assert_eq!(option, [0x00, 0x11]);
        assert_eq!(date.to_string(), "date");
    }
}
