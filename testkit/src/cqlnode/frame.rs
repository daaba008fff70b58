//! The CQL native protocol v4 frame codec: frame headers, the `[notation]` primitives of the
//! spec (section 3), request bodies and response bodies.

use super::types::CqlType;

/// Protocol version the node speaks.
pub(crate) const VERSION: u8 = 4;
/// Frame header length in v4.
pub(crate) const HEADER_LEN: usize = 9;
/// Largest frame body accepted (the spec's limit is 256 MB).
pub(crate) const MAX_BODY: usize = 256 * 1024 * 1024;

/// Request and response opcodes.
pub(crate) mod opcode {
    /// ERROR response.
    pub(crate) const ERROR: u8 = 0x00;
    /// STARTUP request.
    pub(crate) const STARTUP: u8 = 0x01;
    /// READY response.
    pub(crate) const READY: u8 = 0x02;
    /// OPTIONS request.
    pub(crate) const OPTIONS: u8 = 0x05;
    /// SUPPORTED response.
    pub(crate) const SUPPORTED: u8 = 0x06;
    /// QUERY request.
    pub(crate) const QUERY: u8 = 0x07;
    /// RESULT response.
    pub(crate) const RESULT: u8 = 0x08;
    /// PREPARE request.
    pub(crate) const PREPARE: u8 = 0x09;
    /// EXECUTE request.
    pub(crate) const EXECUTE: u8 = 0x0A;
    /// REGISTER request.
    pub(crate) const REGISTER: u8 = 0x0B;
    /// BATCH request.
    pub(crate) const BATCH: u8 = 0x0D;
}

/// Error codes (spec section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// 0x0000 Server error.
    Server,
    /// 0x000A Protocol error.
    Protocol,
    /// 0x1000 Unavailable (with consistency, required and alive counts).
    Unavailable,
    /// 0x1001 Overloaded.
    Overloaded,
    /// 0x2000 Syntax error.
    Syntax,
    /// 0x2200 Invalid.
    Invalid,
    /// 0x2400 Already exists (with keyspace and table).
    AlreadyExists,
    /// 0x2500 Unprepared (with the statement id).
    Unprepared,
}

impl ErrorCode {
    /// The protocol's numeric code.
    pub(crate) fn code(self) -> i32 {
        match self {
            ErrorCode::Server => 0x0000,
            ErrorCode::Protocol => 0x000A,
            ErrorCode::Unavailable => 0x1000,
            ErrorCode::Overloaded => 0x1001,
            ErrorCode::Syntax => 0x2000,
            ErrorCode::Invalid => 0x2200,
            ErrorCode::AlreadyExists => 0x2400,
            ErrorCode::Unprepared => 0x2500,
        }
    }
}

/// An error answer with its code-specific extra fields.
#[derive(Debug, Clone)]
pub(crate) struct CqlError {
    /// The code.
    pub(crate) code: ErrorCode,
    /// The message shown to users.
    pub(crate) message: String,
    /// For `AlreadyExists`: keyspace and table ("" for a keyspace).
    pub(crate) already: Option<(String, String)>,
    /// For `Unprepared`: the unknown id.
    pub(crate) unprepared_id: Vec<u8>,
    /// For `Unavailable`: the consistency level of the request.
    pub(crate) consistency: u16,
}

impl CqlError {
    /// An error with no extra fields.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CqlError {
            code,
            message: message.into(),
            already: None,
            unprepared_id: Vec::new(),
            consistency: 1,
        }
    }

    /// 0x2200 Invalid.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// 0x000A Protocol error.
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Protocol, message)
    }

    /// Encodes the ERROR body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.int(self.code.code());
        w.string(&self.message);
        match self.code {
            ErrorCode::Unavailable => {
                w.short(self.consistency);
                w.int(1);
                w.int(0);
            }
            ErrorCode::AlreadyExists => {
                let (ks, t) = self.already.clone().unwrap_or_default();
                w.string(&ks);
                w.string(&t);
            }
            ErrorCode::Unprepared => w.short_bytes(&self.unprepared_id),
            _ => {}
        }
        w.0
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    /// Version byte (direction bit included).
    pub(crate) version: u8,
    /// Flags.
    pub(crate) flags: u8,
    /// Stream id, echoed in the answer.
    pub(crate) stream: i16,
    /// Opcode.
    pub(crate) opcode: u8,
    /// Body length.
    pub(crate) length: usize,
}

impl Header {
    /// Decodes the 9 header bytes.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, CqlError> {
        let length = i32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        if length < 0 || length as usize > MAX_BODY {
            return Err(CqlError::protocol(format!(
                "invalid frame body length {length}"
            )));
        }
        Ok(Header {
            version: b[0],
            flags: b[1],
            stream: i16::from_be_bytes([b[2], b[3]]),
            opcode: b[4],
            length: length as usize,
        })
    }
}

/// Builds a response frame.
pub(crate) fn response_frame(stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(0x80 | VERSION);
    out.push(0);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(opcode);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Writes the spec's notations into a body.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    /// `[int]`
    pub(crate) fn int(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// `[short]`
    pub(crate) fn short(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// `[string]`
    pub(crate) fn string(&mut self, s: &str) {
        self.short(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// `[bytes]`, `None` for null.
    pub(crate) fn bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.int(b.len() as i32);
                self.0.extend_from_slice(b);
            }
            None => self.int(-1),
        }
    }
    /// `[short bytes]`
    pub(crate) fn short_bytes(&mut self, b: &[u8]) {
        self.short(b.len() as u16);
        self.0.extend_from_slice(b);
    }
    /// `[string multimap]`
    pub(crate) fn string_multimap(&mut self, m: &[(&str, Vec<&str>)]) {
        self.short(m.len() as u16);
        for (k, vs) in m {
            self.string(k);
            self.short(vs.len() as u16);
            for v in vs {
                self.string(v);
            }
        }
    }
}

/// Reads the spec's notations from a body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A bound value: the protocol distinguishes null from "unset" (leave the column alone).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Serialized bytes.
    Set(Vec<u8>),
    /// `[bytes]` of length -1.
    Null,
    /// `[value]` of length -2.
    Unset,
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CqlError> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| CqlError::protocol("truncated request body"))?;
        self.pos += n;
        Ok(s)
    }

    /// `[byte]`
    pub(crate) fn byte(&mut self) -> Result<u8, CqlError> {
        Ok(self.take(1)?[0])
    }
    /// `[short]`
    pub(crate) fn short(&mut self) -> Result<u16, CqlError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// `[int]`
    pub(crate) fn int(&mut self) -> Result<i32, CqlError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// `[long]`
    pub(crate) fn long(&mut self) -> Result<i64, CqlError> {
        let b = self.take(8)?;
        Ok(i64::from_be_bytes(b.try_into().unwrap_or_default()))
    }
    /// `[string]`
    pub(crate) fn string(&mut self) -> Result<String, CqlError> {
        let n = self.short()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| CqlError::protocol("a [string] is not valid UTF-8"))
    }
    /// `[long string]`
    pub(crate) fn long_string(&mut self) -> Result<String, CqlError> {
        let n = self.int()?;
        if n < 0 {
            return Err(CqlError::protocol("negative [long string] length"));
        }
        String::from_utf8(self.take(n as usize)?.to_vec())
            .map_err(|_| CqlError::protocol("a [long string] is not valid UTF-8"))
    }
    /// `[short bytes]`
    pub(crate) fn short_bytes(&mut self) -> Result<Vec<u8>, CqlError> {
        let n = self.short()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// `[bytes]`, `None` for null.
    pub(crate) fn bytes(&mut self) -> Result<Option<Vec<u8>>, CqlError> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }
    /// `[value]`
    pub(crate) fn value(&mut self) -> Result<Value, CqlError> {
        match self.int()? {
            -1 => Ok(Value::Null),
            -2 => Ok(Value::Unset),
            n if n < 0 => Err(CqlError::protocol(format!("invalid [value] length {n}"))),
            n => Ok(Value::Set(self.take(n as usize)?.to_vec())),
        }
    }
    /// `[string map]`
    pub(crate) fn string_map(&mut self) -> Result<Vec<(String, String)>, CqlError> {
        let n = self.short()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
    /// `[bytes map]` (custom payloads), skipped.
    pub(crate) fn skip_bytes_map(&mut self) -> Result<(), CqlError> {
        let n = self.short()?;
        for _ in 0..n {
            self.string()?;
            self.bytes()?;
        }
        Ok(())
    }
}

/// The `<query_parameters>` of QUERY and EXECUTE (spec section 4.1.4).
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams {
    /// Consistency level.
    pub(crate) consistency: u16,
    /// Bound values.
    pub(crate) values: Vec<Value>,
    /// Names of the values, if the client sent them by name.
    pub(crate) names: Option<Vec<String>>,
    /// Skip result metadata.
    pub(crate) skip_metadata: bool,
    /// Page size (`None`: everything at once).
    pub(crate) page_size: Option<usize>,
    /// Paging state to resume from.
    pub(crate) paging_state: Option<Vec<u8>>,
    /// Client-side default timestamp (microseconds).
    pub(crate) timestamp: Option<i64>,
}

impl QueryParams {
    /// Decodes query parameters.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<QueryParams, CqlError> {
        let mut p = QueryParams {
            consistency: r.short()?,
            ..QueryParams::default()
        };
        let flags = r.byte()?;
        if flags & 0x01 != 0 {
            let n = r.short()?;
            let named = flags & 0x40 != 0;
            let mut names = Vec::new();
            for _ in 0..n {
                if named {
                    names.push(r.string()?);
                }
                p.values.push(r.value()?);
            }
            if named {
                p.names = Some(names);
            }
        }
        p.skip_metadata = flags & 0x02 != 0;
        if flags & 0x04 != 0 {
            let n = r.int()?;
            p.page_size = (n > 0).then_some(n as usize);
        }
        if flags & 0x08 != 0 {
            p.paging_state = r.bytes()?;
        }
        if flags & 0x10 != 0 {
            r.short()?;
        }
        if flags & 0x20 != 0 {
            p.timestamp = Some(r.long()?);
        }
        Ok(p)
    }
}

/// A column in result or bind metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ColSpec {
    /// Keyspace.
    pub(crate) keyspace: String,
    /// Table.
    pub(crate) table: String,
    /// Column (or bind variable) name.
    pub(crate) name: String,
    /// Type.
    pub(crate) ty: CqlType,
}

/// Writes column specs, with a global table spec when they share one (flag 0x0001).
fn write_specs(w: &mut Writer, specs: &[ColSpec], global: bool) {
    if global {
        w.string(&specs[0].keyspace);
        w.string(&specs[0].table);
    }
    for s in specs {
        if !global {
            w.string(&s.keyspace);
            w.string(&s.table);
        }
        w.string(&s.name);
        s.ty.write_option(&mut w.0);
    }
}

fn shares_table(specs: &[ColSpec]) -> bool {
    !specs.is_empty()
        && specs
            .iter()
            .all(|s| s.keyspace == specs[0].keyspace && s.table == specs[0].table)
}

/// Writes `<metadata>` of a Rows result.
pub(crate) fn write_rows_metadata(
    w: &mut Writer,
    specs: &[ColSpec],
    paging_state: Option<&[u8]>,
    no_metadata: bool,
) {
    let global = shares_table(specs);
    let mut flags = 0;
    if global && !no_metadata {
        flags |= 0x0001;
    }
    if paging_state.is_some() {
        flags |= 0x0002;
    }
    if no_metadata {
        flags |= 0x0004;
    }
    w.int(flags);
    w.int(specs.len() as i32);
    if let Some(ps) = paging_state {
        w.bytes(Some(ps));
    }
    if !no_metadata {
        write_specs(w, specs, global);
    }
}

/// Writes the `<metadata>` of a Prepared result (bind variables, with partition key indexes).
pub(crate) fn write_prepared_metadata(w: &mut Writer, specs: &[ColSpec], pk_indexes: &[u16]) {
    let global = shares_table(specs);
    w.int(if global { 0x0001 } else { 0 });
    w.int(specs.len() as i32);
    w.int(pk_indexes.len() as i32);
    for i in pk_indexes {
        w.short(*i);
    }
    write_specs(w, specs, global);
}
