//! A lexer and recursive-descent parser for the CQL subset the node runs.
//!
//! Parsing only checks syntax; names are resolved against the schema when a statement is
//! prepared or executed ([`super::engine`]). A construct outside the subset fails here with a
//! message naming it, so a client never gets a silently wrong answer.

use super::types::{parse_uuid, CqlType, Literal};

/// A parse failure: `syntax` is true for malformed text (protocol code 0x2000) and false for
/// well-formed CQL the node does not support (0x2200).
#[derive(Debug, Clone)]
pub(crate) struct ParseError {
    /// What went wrong, naming the token or the unsupported feature.
    pub(crate) message: String,
    /// Malformed text rather than an unsupported feature.
    pub(crate) syntax: bool,
}

type PResult<T> = Result<T, ParseError>;

fn syntax<T>(message: impl Into<String>) -> PResult<T> {
    Err(ParseError {
        message: message.into(),
        syntax: true,
    })
}

fn unsupported<T>(feature: impl AsRef<str>) -> PResult<T> {
    Err(ParseError {
        message: format!("{}: not supported by the test node", feature.as_ref()),
        syntax: false,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An unquoted identifier or keyword, as written.
    Word(String),
    /// A `"quoted"` identifier, case preserved.
    Quoted(String),
    Str(String),
    Int(i64),
    Float(f64),
    Uuid([u8; 16]),
    Blob(Vec<u8>),
    /// Punctuation and operators: `( ) , ; . = < > <= >= != * ? { } [ ] : + -`.
    Sym(&'static str),
}

fn lex(src: &str) -> PResult<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-')
            || c == '/' && chars.get(i + 1) == Some(&'/')
        {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return syntax("unterminated string literal"),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else if c == '$' && chars.get(i + 1) == Some(&'$') {
            let start = i + 2;
            let mut j = start;
            while j + 1 < chars.len() && !(chars[j] == '$' && chars[j + 1] == '$') {
                j += 1;
            }
            if j + 1 >= chars.len() {
                return syntax("unterminated $$ string literal");
            }
            out.push(Tok::Str(chars[start..j].iter().collect()));
            i = j + 2;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return syntax("unterminated quoted identifier"),
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        s.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Quoted(s));
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            // A UUID constant such as 123e4567-e89b-12d3-a456-426614174000.
            if i - start == 8 && chars.get(i) == Some(&'-') && start + 36 <= chars.len() {
                let text: String = chars[start..start + 36].iter().collect();
                let ends = chars
                    .get(start + 36)
                    .is_none_or(|ch| !(ch.is_ascii_alphanumeric() || *ch == '_'));
                if let (Some(u), true) = (parse_uuid(&text), ends) {
                    out.push(Tok::Uuid(u));
                    i = start + 36;
                    continue;
                }
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with(|ch: char| ch.is_ascii_digit()) {
                i = start;
                lex_number(&chars, &mut i, &mut out)?;
            } else {
                out.push(Tok::Word(word));
            }
        } else if c.is_ascii_digit()
            || c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)
        {
            lex_number(&chars, &mut i, &mut out)?;
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match two.as_str() {
                "<=" => Some("<="),
                ">=" => Some(">="),
                "!=" => Some("!="),
                _ => None,
            };
            if let Some(s) = sym {
                out.push(Tok::Sym(s));
                i += 2;
                continue;
            }
            let s = match c {
                '(' => "(",
                ')' => ")",
                ',' => ",",
                ';' => ";",
                '.' => ".",
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '*' => "*",
                '?' => "?",
                '{' => "{",
                '}' => "}",
                '[' => "[",
                ']' => "]",
                ':' => ":",
                '+' => "+",
                '-' => "-",
                other => return syntax(format!("unexpected character '{other}'")),
            };
            out.push(Tok::Sym(s));
            i += 1;
        }
    }
    Ok(out)
}

fn lex_number(chars: &[char], i: &mut usize, out: &mut Vec<Tok>) -> PResult<()> {
    let start = *i;
    if chars[*i] == '0' && matches!(chars.get(*i + 1), Some('x' | 'X')) {
        *i += 2;
        let hs = *i;
        while *i < chars.len() && chars[*i].is_ascii_hexdigit() {
            *i += 1;
        }
        let hex: String = chars[hs..*i].iter().collect();
        if hex.len() % 2 != 0 {
            return syntax(format!("blob constant 0x{hex} has an odd number of digits"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&hex[k..k + 2], 16).unwrap_or(0))
            .collect();
        out.push(Tok::Blob(bytes));
        return Ok(());
    }
    let mut float = false;
    while *i < chars.len() {
        let ch = chars[*i];
        if ch.is_ascii_digit() {
            *i += 1;
        } else if ch == '.' && !float && chars.get(*i + 1).is_some_and(char::is_ascii_digit) {
            float = true;
            *i += 1;
        } else if (ch == 'e' || ch == 'E')
            && (chars.get(*i + 1).is_some_and(char::is_ascii_digit)
                || matches!(chars.get(*i + 1), Some('+' | '-'))
                    && chars.get(*i + 2).is_some_and(char::is_ascii_digit))
        {
            float = true;
            *i += 2;
        } else {
            break;
        }
    }
    if *i < chars.len() && (chars[*i].is_ascii_alphabetic() || chars[*i] == '_') {
        let text: String = chars[start..=*i].iter().collect();
        return syntax(format!("unexpected token '{text}'"));
    }
    let text: String = chars[start..*i].iter().collect();
    if float {
        match text.parse() {
            Ok(f) => out.push(Tok::Float(f)),
            Err(_) => return syntax(format!("bad number '{text}'")),
        }
    } else {
        match text.parse() {
            Ok(n) => out.push(Tok::Int(n)),
            Err(_) => return syntax(format!("integer '{text}' is out of range")),
        }
    }
    Ok(())
}

/// A value position in a statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    /// The `n`th bind marker (0-based, in textual order).
    Bind(usize),
    /// A constant.
    Lit(Literal),
    /// `now()`, `uuid()`, `toTimestamp(x)`, `currentTimestamp()`, ...
    Func(String, Vec<Term>),
}

/// A comparison in a WHERE clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `=`
    Eq,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// The right-hand side of `col IN ...`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InValues {
    /// `IN (a, b, ?)`.
    Terms(Vec<Term>),
    /// `IN ?`: one marker bound to a list.
    Marker(usize),
}

/// One WHERE relation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Relation {
    /// `col op term`.
    Cmp(String, Op, Term),
    /// `col IN ...`.
    In(String, InValues),
}

/// A table name, with its keyspace if the statement names one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableRef {
    /// The keyspace, or `None` for the connection's current keyspace.
    pub(crate) keyspace: Option<String>,
    /// The table.
    pub(crate) table: String,
}

/// One item of a SELECT clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selector {
    /// A column.
    Column(String),
    /// `WRITETIME(col)`.
    WriteTime(String),
    /// `TTL(col)`: the seconds left before the cell expires, null without a TTL.
    Ttl(String),
    /// `COUNT(*)` or `COUNT(1)`.
    CountStar,
    /// A function of constants, such as `toTimestamp(now())`.
    Func(String, Vec<Term>),
}

/// `LOGGED`, `UNLOGGED`: the node applies both atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// `BEGIN BATCH`.
    Logged,
    /// `BEGIN UNLOGGED BATCH`.
    Unlogged,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// `CREATE KEYSPACE`.
    CreateKeyspace {
        /// Keyspace name.
        name: String,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// The replication map as given.
        replication: Vec<(String, String)>,
        /// `durable_writes`.
        durable_writes: bool,
        /// ScyllaDB's `AND tablets = {'enabled': ...}` (`'initial': n` enables them): `None`
        /// when absent.
        tablets: Option<bool>,
    },
    /// `CREATE TABLE`.
    CreateTable {
        /// The table.
        table: TableRef,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// Columns in declaration order.
        columns: Vec<(String, CqlType)>,
        /// Partition key columns.
        partition_key: Vec<String>,
        /// Clustering columns.
        clustering: Vec<String>,
        /// `WITH CLUSTERING ORDER BY`: (column, descending).
        order: Vec<(String, bool)>,
        /// `WITH comment = '...'`.
        comment: String,
        /// `WITH default_time_to_live = n` (seconds; 0 for none).
        default_ttl: i32,
    },
    /// `DROP KEYSPACE`.
    DropKeyspace {
        /// Keyspace name.
        name: String,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `ALTER TABLE ... ADD column type`.
    AlterTableAdd {
        /// The table.
        table: TableRef,
        /// The column added.
        column: String,
        /// Its type.
        ty: CqlType,
    },
    /// `DROP TABLE`.
    DropTable {
        /// The table.
        table: TableRef,
        /// `IF EXISTS`.
        if_exists: bool,
    },
    /// `TRUNCATE`.
    Truncate {
        /// The table.
        table: TableRef,
    },
    /// `USE ks`.
    Use(String),
    /// `INSERT`.
    Insert {
        /// The table.
        table: TableRef,
        /// Column names.
        columns: Vec<String>,
        /// One term per column.
        values: Vec<Term>,
        /// `IF NOT EXISTS`.
        if_not_exists: bool,
        /// `USING TIMESTAMP`.
        timestamp: Option<Term>,
        /// `USING TTL`.
        ttl: Option<Term>,
    },
    /// `UPDATE`.
    Update {
        /// The table.
        table: TableRef,
        /// `SET col = term, ...`.
        assignments: Vec<(String, Term)>,
        /// WHERE relations.
        wheres: Vec<Relation>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `IF col = term AND ...`.
        conditions: Vec<(String, Term)>,
        /// `USING TIMESTAMP`.
        timestamp: Option<Term>,
        /// `USING TTL`.
        ttl: Option<Term>,
    },
    /// `DELETE`.
    Delete {
        /// The table.
        table: TableRef,
        /// Columns to delete; empty deletes rows.
        columns: Vec<String>,
        /// WHERE relations.
        wheres: Vec<Relation>,
        /// `IF EXISTS`.
        if_exists: bool,
        /// `IF col = term AND ...`.
        conditions: Vec<(String, Term)>,
        /// `USING TIMESTAMP`.
        timestamp: Option<Term>,
    },
    /// `SELECT`.
    Select {
        /// The table.
        table: TableRef,
        /// `None` for `*`.
        selectors: Option<Vec<(Selector, Option<String>)>>,
        /// WHERE relations.
        wheres: Vec<Relation>,
        /// ORDER BY (column, descending).
        order_by: Vec<(String, bool)>,
        /// LIMIT.
        limit: Option<Term>,
    },
    /// `DESCRIBE ...`, answered by the server as Cassandra 4.0+ does for cqlsh.
    Describe(Describe),
    /// `BEGIN ... BATCH ... APPLY BATCH`.
    Batch {
        /// Logged or unlogged.
        kind: BatchKind,
        /// The statements, each INSERT, UPDATE or DELETE.
        statements: Vec<Statement>,
        /// `USING TIMESTAMP` of the whole batch.
        timestamp: Option<Term>,
    },
}

/// What a `DESCRIBE` statement asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Describe {
    /// `DESCRIBE KEYSPACES`: keyspace names.
    Keyspaces,
    /// `DESCRIBE TABLES`: table names of the current keyspace, or of every keyspace.
    Tables,
    /// `DESCRIBE KEYSPACE [ks]`: the keyspace's and its tables' CREATE statements.
    Keyspace(Option<String>),
    /// `DESCRIBE TABLE [ks.]t`: the table's CREATE statement.
    Table(TableRef),
    /// `DESCRIBE [FULL] SCHEMA`: every (non-system, unless FULL) keyspace.
    Schema {
        /// Include the system keyspaces.
        full: bool,
    },
    /// `DESCRIBE name`: a keyspace, else a table.
    Name(TableRef),
}

impl Statement {
    /// The table a data statement addresses.
    pub(crate) fn table(&self) -> Option<&TableRef> {
        match self {
            Statement::Insert { table, .. }
            | Statement::Update { table, .. }
            | Statement::Delete { table, .. }
            | Statement::Select { table, .. }
            | Statement::CreateTable { table, .. }
            | Statement::AlterTableAdd { table, .. }
            | Statement::DropTable { table, .. }
            | Statement::Truncate { table } => Some(table),
            _ => None,
        }
    }

    /// Whether the statement is a lightweight transaction (has an `IF` clause), or a batch
    /// holding one.
    pub(crate) fn is_conditional(&self) -> bool {
        match self {
            Statement::Insert { if_not_exists, .. } => *if_not_exists,
            Statement::Update {
                if_exists,
                conditions,
                ..
            }
            | Statement::Delete {
                if_exists,
                conditions,
                ..
            } => *if_exists || !conditions.is_empty(),
            Statement::Batch { statements, .. } => statements.iter().any(Self::is_conditional),
            _ => false,
        }
    }

    /// The statement's own `USING TIMESTAMP`.
    pub(crate) fn using_timestamp(&self) -> Option<&Term> {
        match self {
            Statement::Insert { timestamp, .. }
            | Statement::Update { timestamp, .. }
            | Statement::Delete { timestamp, .. }
            | Statement::Batch { timestamp, .. } => timestamp.as_ref(),
            _ => None,
        }
    }
}

/// Parses one statement (a trailing `;` is allowed). Returns it with its number of bind
/// markers.
pub(crate) fn parse(src: &str) -> PResult<(Statement, usize)> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        markers: 0,
    };
    let stmt = p.statement()?;
    while p.eat_sym(";") {}
    if let Some(t) = p.peek() {
        return syntax(format!(
            "unexpected {} after the end of the statement",
            describe(t)
        ));
    }
    Ok((stmt, p.markers))
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(w) => format!("'\"{w}\"'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Int(n) => format!("'{n}'"),
        Tok::Float(x) => format!("'{x}'"),
        Tok::Uuid(_) => "a UUID constant".to_string(),
        Tok::Blob(_) => "a blob constant".to_string(),
        Tok::Sym(s) => format!("'{s}'"),
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    markers: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> PResult<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.fail(&format!("expected {}", kw.to_ascii_uppercase()))
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> PResult<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.fail(&format!("expected '{s}'"))
        }
    }

    fn fail<T>(&self, what: &str) -> PResult<T> {
        match self.peek() {
            Some(t) => syntax(format!("line 1: {what}, found {}", describe(t))),
            None => syntax(format!("line 1: {what}, found the end of the statement")),
        }
    }

    /// An identifier: unquoted ones are case-insensitive (lower-cased), quoted ones exact.
    fn ident(&mut self) -> PResult<String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.to_ascii_lowercase();
                self.pos += 1;
                Ok(w)
            }
            Some(Tok::Quoted(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => self.fail("expected an identifier"),
        }
    }

    fn table_ref(&mut self) -> PResult<TableRef> {
        let first = self.ident()?;
        if self.eat_sym(".") {
            Ok(TableRef {
                keyspace: Some(first),
                table: self.ident()?,
            })
        } else {
            Ok(TableRef {
                keyspace: None,
                table: first,
            })
        }
    }

    fn statement(&mut self) -> PResult<Statement> {
        let Some(Tok::Word(w)) = self.peek() else {
            return self.fail("expected a statement");
        };
        match w.to_ascii_lowercase().as_str() {
            "select" => {
                self.pos += 1;
                self.select()
            }
            "insert" => {
                self.pos += 1;
                self.insert()
            }
            "update" => {
                self.pos += 1;
                self.update()
            }
            "delete" => {
                self.pos += 1;
                self.delete()
            }
            "begin" => {
                self.pos += 1;
                self.batch()
            }
            "use" => {
                self.pos += 1;
                Ok(Statement::Use(self.ident()?))
            }
            "create" => {
                self.pos += 1;
                self.create()
            }
            "drop" => {
                self.pos += 1;
                self.drop()
            }
            "truncate" => {
                self.pos += 1;
                self.eat_kw("table");
                Ok(Statement::Truncate {
                    table: self.table_ref()?,
                })
            }
            "describe" | "desc" => {
                self.pos += 1;
                self.describe().map(Statement::Describe)
            }
            "alter" => {
                self.pos += 1;
                self.alter()
            }
            "grant" | "revoke" | "list" => {
                unsupported(format!("{} statements", w.to_ascii_uppercase()))
            }
            _ => self.fail("expected a statement"),
        }
    }

    fn describe(&mut self) -> PResult<Describe> {
        if self.eat_kw("keyspaces") {
            return Ok(Describe::Keyspaces);
        }
        if self.eat_kw("tables") || self.eat_kw("columnfamilies") {
            return Ok(Describe::Tables);
        }
        if self.eat_kw("keyspace") {
            let name = match self.peek() {
                Some(Tok::Word(_) | Tok::Quoted(_)) => Some(self.ident()?),
                _ => None,
            };
            return Ok(Describe::Keyspace(name));
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            return Ok(Describe::Table(self.table_ref()?));
        }
        if self.eat_kw("full") {
            self.expect_kw("schema")?;
            return Ok(Describe::Schema { full: true });
        }
        if self.eat_kw("schema") {
            return Ok(Describe::Schema { full: false });
        }
        for what in [
            "cluster",
            "types",
            "type",
            "functions",
            "function",
            "aggregates",
            "aggregate",
            "index",
            "materialized",
        ] {
            if self.is_kw(what) {
                return unsupported(format!("DESCRIBE {}", what.to_ascii_uppercase()));
            }
        }
        Ok(Describe::Name(self.table_ref()?))
    }

    fn marker(&mut self) -> usize {
        let n = self.markers;
        self.markers += 1;
        n
    }

    fn term(&mut self) -> PResult<Term> {
        if self.eat_sym("?") {
            return Ok(Term::Bind(self.marker()));
        }
        if matches!(self.peek(), Some(Tok::Sym(":"))) {
            return unsupported("named bind markers (:name)");
        }
        if let (Some(Tok::Word(name)), Some(Tok::Sym("("))) = (self.peek(), self.peek_at(1)) {
            let name = name.to_ascii_lowercase();
            self.pos += 2;
            let mut args = Vec::new();
            if !self.eat_sym(")") {
                loop {
                    args.push(self.term()?);
                    if self.eat_sym(")") {
                        break;
                    }
                    self.expect_sym(",")?;
                }
            }
            return Ok(Term::Func(name, args));
        }
        Ok(Term::Lit(self.literal()?))
    }

    fn literal(&mut self) -> PResult<Literal> {
        let negative = self.eat_sym("-");
        let tok = self.next();
        let lit = match tok {
            Some(Tok::Int(n)) => Literal::Int(if negative { -n } else { n }),
            Some(Tok::Float(f)) => Literal::Float(if negative { -f } else { f }),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("nan") => Literal::Float(f64::NAN),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("infinity") => {
                Literal::Float(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            }
            _ if negative => {
                self.pos -= 1;
                return self.fail("expected a number after '-'");
            }
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Uuid(u)) => Literal::Uuid(u),
            Some(Tok::Blob(b)) => Literal::Blob(b),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Some(Tok::Sym("[")) => {
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.literal()?);
                        if self.eat_sym("]") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                }
                Literal::List(items)
            }
            Some(Tok::Sym("{")) => {
                if self.eat_sym("}") {
                    return Ok(Literal::Map(Vec::new()));
                }
                let first = self.literal()?;
                if self.eat_sym(":") {
                    let mut entries = vec![(first, self.literal()?)];
                    while self.eat_sym(",") {
                        let k = self.literal()?;
                        self.expect_sym(":")?;
                        entries.push((k, self.literal()?));
                    }
                    self.expect_sym("}")?;
                    Literal::Map(entries)
                } else {
                    let mut items = vec![first];
                    while self.eat_sym(",") {
                        items.push(self.literal()?);
                    }
                    self.expect_sym("}")?;
                    Literal::Set(items)
                }
            }
            Some(Tok::Sym("?")) => return unsupported("bind markers inside collection literals"),
            Some(Tok::Sym("(")) => return unsupported("tuples"),
            _ => {
                self.pos -= 1;
                return self.fail("expected a constant");
            }
        };
        Ok(lit)
    }

    /// `USING TIMESTAMP t AND TTL n` (either, in either order): (timestamp, ttl).
    fn using(&mut self) -> PResult<(Option<Term>, Option<Term>)> {
        let (mut ts, mut ttl) = (None, None);
        if self.eat_kw("using") {
            loop {
                if self.eat_kw("timestamp") {
                    ts = Some(self.term()?);
                } else if self.eat_kw("ttl") {
                    ttl = Some(self.term()?);
                } else {
                    return self.fail("expected TIMESTAMP or TTL");
                }
                if !self.eat_kw("and") {
                    break;
                }
            }
        }
        Ok((ts, ttl))
    }

    /// `USING TIMESTAMP` where a TTL has no meaning (DELETE, BATCH): Cassandra refuses a TTL
    /// there ("TTL is not supported for DELETE" / "Global TTL on the BATCH statement is not
    /// supported.", `Attributes` and `BatchStatement.Parsed`).
    fn using_timestamp_only(&mut self, message: &str) -> PResult<Option<Term>> {
        let (ts, ttl) = self.using()?;
        if ttl.is_some() {
            return Err(ParseError {
                message: message.to_string(),
                syntax: false,
            });
        }
        Ok(ts)
    }

    fn where_clause(&mut self) -> PResult<Vec<Relation>> {
        let mut out = Vec::new();
        loop {
            if self.is_kw("token") {
                return unsupported("token() restrictions");
            }
            if matches!(self.peek(), Some(Tok::Sym("("))) {
                return unsupported("multi-column relations");
            }
            let col = self.ident()?;
            if self.eat_kw("in") {
                if self.eat_sym("?") {
                    out.push(Relation::In(col, InValues::Marker(self.marker())));
                } else {
                    self.expect_sym("(")?;
                    let mut terms = Vec::new();
                    if !self.eat_sym(")") {
                        loop {
                            terms.push(self.term()?);
                            if self.eat_sym(")") {
                                break;
                            }
                            self.expect_sym(",")?;
                        }
                    }
                    out.push(Relation::In(col, InValues::Terms(terms)));
                }
            } else if self.is_kw("contains") {
                return unsupported("CONTAINS restrictions");
            } else if self.is_kw("like") {
                return unsupported("LIKE restrictions");
            } else {
                let op = match self.next() {
                    Some(Tok::Sym("=")) => Op::Eq,
                    Some(Tok::Sym("<")) => Op::Lt,
                    Some(Tok::Sym("<=")) => Op::Le,
                    Some(Tok::Sym(">")) => Op::Gt,
                    Some(Tok::Sym(">=")) => Op::Ge,
                    Some(Tok::Sym("!=")) => return unsupported("the != operator"),
                    _ => {
                        self.pos -= 1;
                        return self.fail("expected a comparison operator");
                    }
                };
                out.push(Relation::Cmp(col, op, self.term()?));
            }
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok(out)
    }

    fn select(&mut self) -> PResult<Statement> {
        if self.is_kw("json") {
            return unsupported("SELECT JSON");
        }
        if self.is_kw("distinct") {
            return unsupported("SELECT DISTINCT");
        }
        let selectors = if self.eat_sym("*") {
            None
        } else {
            let mut items = Vec::new();
            loop {
                let sel = self.selector()?;
                let alias = if self.eat_kw("as") {
                    Some(self.ident()?)
                } else {
                    None
                };
                items.push((sel, alias));
                if !self.eat_sym(",") {
                    break;
                }
            }
            Some(items)
        };
        self.expect_kw("from")?;
        let table = self.table_ref()?;
        let wheres = if self.eat_kw("where") {
            self.where_clause()?
        } else {
            Vec::new()
        };
        if self.is_kw("group") {
            return unsupported("GROUP BY");
        }
        let mut order_by = Vec::new();
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            loop {
                let col = self.ident()?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                order_by.push((col, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.is_kw("per") {
            return unsupported("PER PARTITION LIMIT");
        }
        let limit = if self.eat_kw("limit") {
            Some(self.term()?)
        } else {
            None
        };
        if self.is_kw("allow") {
            return unsupported("ALLOW FILTERING");
        }
        Ok(Statement::Select {
            table,
            selectors,
            wheres,
            order_by,
            limit,
        })
    }

    fn selector(&mut self) -> PResult<Selector> {
        if let (Some(Tok::Word(w)), Some(Tok::Sym("("))) = (self.peek(), self.peek_at(1)) {
            let name = w.to_ascii_lowercase();
            match name.as_str() {
                "writetime" => {
                    self.pos += 2;
                    let col = self.ident()?;
                    self.expect_sym(")")?;
                    return Ok(Selector::WriteTime(col));
                }
                "count" => {
                    self.pos += 2;
                    if !(self.eat_sym("*") || matches!(self.next(), Some(Tok::Int(1)))) {
                        return unsupported("COUNT of a column");
                    }
                    self.expect_sym(")")?;
                    return Ok(Selector::CountStar);
                }
                "ttl" => {
                    self.pos += 2;
                    let col = self.ident()?;
                    self.expect_sym(")")?;
                    return Ok(Selector::Ttl(col));
                }
                "token" => return unsupported("token() selectors"),
                "cast" => return unsupported("CAST"),
                _ => {
                    if let Term::Func(f, args) = self.term()? {
                        return Ok(Selector::Func(f, args));
                    }
                    unreachable!("a word followed by '(' parses as a function call");
                }
            }
        }
        Ok(Selector::Column(self.ident()?))
    }

    fn insert(&mut self) -> PResult<Statement> {
        self.expect_kw("into")?;
        let table = self.table_ref()?;
        if self.is_kw("json") {
            return unsupported("INSERT JSON");
        }
        self.expect_sym("(")?;
        let mut columns = Vec::new();
        loop {
            columns.push(self.ident()?);
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        self.expect_kw("values")?;
        self.expect_sym("(")?;
        let mut values = Vec::new();
        loop {
            values.push(self.term()?);
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        let mut if_not_exists = false;
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            if_not_exists = true;
        }
        let (timestamp, ttl) = self.using()?;
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            if_not_exists = true;
        }
        if columns.len() != values.len() {
            return syntax(format!(
                "unmatched column names/values: {} columns, {} values",
                columns.len(),
                values.len()
            ));
        }
        Ok(Statement::Insert {
            table,
            columns,
            values,
            if_not_exists,
            timestamp,
            ttl,
        })
    }

    /// `IF EXISTS` or `IF col = term AND ...` after UPDATE and DELETE: (if exists, conditions).
    fn if_tail(&mut self) -> PResult<(bool, Vec<(String, Term)>)> {
        if !self.eat_kw("if") {
            return Ok((false, Vec::new()));
        }
        if self.eat_kw("exists") {
            return Ok((true, Vec::new()));
        }
        let mut conditions = Vec::new();
        loop {
            let col = self.ident()?;
            if !self.eat_sym("=") {
                return unsupported(
                    "conditional updates other than IF EXISTS and IF column = value",
                );
            }
            conditions.push((col, self.term()?));
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok((false, conditions))
    }

    fn update(&mut self) -> PResult<Statement> {
        let table = self.table_ref()?;
        let (timestamp, ttl) = self.using()?;
        self.expect_kw("set")?;
        let mut assignments = Vec::new();
        loop {
            let col = self.ident()?;
            if matches!(self.peek(), Some(Tok::Sym("["))) {
                return unsupported("element assignments (col[key] = ...)");
            }
            self.expect_sym("=")?;
            if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(&col))
                && matches!(self.peek_at(1), Some(Tok::Sym("+" | "-")))
            {
                return unsupported("collection and counter arithmetic (col = col + ...)");
            }
            let term = self.term()?;
            if matches!(self.peek(), Some(Tok::Sym("+" | "-"))) {
                return unsupported("collection and counter arithmetic (col = ... + col)");
            }
            assignments.push((col, term));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_kw("where")?;
        let wheres = self.where_clause()?;
        let (if_exists, conditions) = self.if_tail()?;
        Ok(Statement::Update {
            table,
            assignments,
            wheres,
            if_exists,
            conditions,
            timestamp,
            ttl,
        })
    }

    fn delete(&mut self) -> PResult<Statement> {
        let mut columns = Vec::new();
        if !self.is_kw("from") {
            loop {
                columns.push(self.ident()?);
                if matches!(self.peek(), Some(Tok::Sym("["))) {
                    return unsupported("deleting collection elements");
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.expect_kw("from")?;
        let table = self.table_ref()?;
        let timestamp = self.using_timestamp_only("TTL is not supported for DELETE")?;
        self.expect_kw("where")?;
        let wheres = self.where_clause()?;
        let (if_exists, conditions) = self.if_tail()?;
        Ok(Statement::Delete {
            table,
            columns,
            wheres,
            if_exists,
            conditions,
            timestamp,
        })
    }

    fn batch(&mut self) -> PResult<Statement> {
        let kind = if self.eat_kw("unlogged") {
            BatchKind::Unlogged
        } else if self.is_kw("counter") {
            return unsupported("counter batches");
        } else {
            self.eat_kw("logged");
            BatchKind::Logged
        };
        self.expect_kw("batch")?;
        let timestamp =
            self.using_timestamp_only("Global TTL on the BATCH statement is not supported.")?;
        let mut statements = Vec::new();
        loop {
            while self.eat_sym(";") {}
            if self.is_kw("apply") && self.is_kw_at(1, "batch") {
                self.pos += 2;
                break;
            }
            if self.peek().is_none() {
                return syntax("missing APPLY BATCH at the end of the batch");
            }
            let stmt = self.statement()?;
            if !matches!(
                stmt,
                Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. }
            ) {
                return syntax("a batch may contain only INSERT, UPDATE and DELETE statements");
            }
            statements.push(stmt);
        }
        Ok(Statement::Batch {
            kind,
            statements,
            timestamp,
        })
    }

    fn if_not_exists(&mut self) -> PResult<bool> {
        if self.eat_kw("if") {
            self.expect_kw("not")?;
            self.expect_kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_exists(&mut self) -> PResult<bool> {
        if self.eat_kw("if") {
            self.expect_kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn create(&mut self) -> PResult<Statement> {
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.ident()?;
            self.expect_kw("with")?;
            let mut replication = None;
            let mut durable_writes = true;
            let mut tablets = None;
            loop {
                let opt = self.ident()?;
                self.expect_sym("=")?;
                match opt.as_str() {
                    "replication" => {
                        let Literal::Map(entries) = self.literal()? else {
                            return syntax("replication must be a map");
                        };
                        let mut out = Vec::new();
                        for (k, v) in entries {
                            let text = |l: Literal| match l {
                                Literal::Str(s) => s,
                                Literal::Int(n) => n.to_string(),
                                other => other.to_string(),
                            };
                            out.push((text(k), text(v)));
                        }
                        replication = Some(out);
                    }
                    "durable_writes" => match self.literal()? {
                        Literal::Bool(b) => durable_writes = b,
                        _ => return syntax("durable_writes must be true or false"),
                    },
                    "tablets" => {
                        let Literal::Map(entries) = self.literal()? else {
                            return syntax("tablets must be a map");
                        };
                        for (k, v) in entries {
                            match (k, v) {
                                (Literal::Str(k), Literal::Bool(b)) if k == "enabled" => {
                                    tablets = Some(b);
                                }
                                (Literal::Str(k), Literal::Int(_)) if k == "initial" => {
                                    tablets = Some(true);
                                }
                                (k, _) => {
                                    return syntax(format!("unknown tablets option {k}"));
                                }
                            }
                        }
                    }
                    other => return unsupported(format!("keyspace option '{other}'")),
                }
                if !self.eat_kw("and") {
                    break;
                }
            }
            let Some(replication) = replication else {
                return syntax("CREATE KEYSPACE needs WITH replication = {...}");
            };
            return Ok(Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
                tablets,
            });
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            return self.create_table();
        }
        match self.peek() {
            Some(Tok::Word(w)) => unsupported(format!("CREATE {}", w.to_ascii_uppercase())),
            _ => self.fail("expected KEYSPACE or TABLE"),
        }
    }

    fn cql_type(&mut self) -> PResult<CqlType> {
        let name = self.ident()?;
        if name == "frozen" {
            self.expect_sym("<")?;
            let t = self.cql_type()?;
            self.expect_sym(">")?;
            return Ok(t);
        }
        if self.eat_sym("<") {
            let mut params = Vec::new();
            loop {
                params.push(self.cql_type()?);
                if self.eat_sym(">") {
                    break;
                }
                self.expect_sym(",")?;
            }
            return CqlType::collection(&name, params).map_err(|message| ParseError {
                message,
                syntax: false,
            });
        }
        if name == "counter" {
            return unsupported("counter columns");
        }
        CqlType::simple(&name).map_err(|message| ParseError {
            message,
            syntax: false,
        })
    }

    fn create_table(&mut self) -> PResult<Statement> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.table_ref()?;
        self.expect_sym("(")?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering = Vec::new();
        loop {
            if self.is_kw("primary") && self.is_kw_at(1, "key") {
                self.pos += 2;
                if !partition_key.is_empty() {
                    return syntax("multiple PRIMARY KEY definitions");
                }
                self.expect_sym("(")?;
                if self.eat_sym("(") {
                    loop {
                        partition_key.push(self.ident()?);
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                } else {
                    partition_key.push(self.ident()?);
                }
                while self.eat_sym(",") {
                    clustering.push(self.ident()?);
                }
                self.expect_sym(")")?;
            } else {
                let name = self.ident()?;
                let ty = self.cql_type()?;
                if self.is_kw("static") {
                    return unsupported("static columns");
                }
                if self.is_kw("primary") {
                    self.pos += 1;
                    self.expect_kw("key")?;
                    if !partition_key.is_empty() {
                        return syntax("multiple PRIMARY KEY definitions");
                    }
                    partition_key.push(name.clone());
                }
                columns.push((name, ty));
            }
            if self.eat_sym(")") {
                break;
            }
            self.expect_sym(",")?;
        }
        let mut order = Vec::new();
        let mut comment = String::new();
        let mut default_ttl = 0;
        if self.eat_kw("with") {
            loop {
                if self.eat_kw("clustering") {
                    self.expect_kw("order")?;
                    self.expect_kw("by")?;
                    self.expect_sym("(")?;
                    loop {
                        let col = self.ident()?;
                        let desc = if self.eat_kw("desc") {
                            true
                        } else {
                            self.expect_kw("asc")?;
                            false
                        };
                        order.push((col, desc));
                        if self.eat_sym(")") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                } else if self.is_kw("compact") {
                    return unsupported("COMPACT STORAGE");
                } else {
                    let opt = self.ident()?;
                    self.expect_sym("=")?;
                    let value = self.literal()?;
                    match (opt.as_str(), value) {
                        ("comment", Literal::Str(s)) => comment = s,
                        ("default_time_to_live", Literal::Int(n)) => {
                            default_ttl = i32::try_from(n).map_err(|_| ParseError {
                                message: format!("default_time_to_live {n} is out of range"),
                                syntax: false,
                            })?;
                        }
                        (
                            "gc_grace_seconds"
                            | "bloom_filter_fp_chance"
                            | "caching"
                            | "compaction"
                            | "compression"
                            | "crc_check_chance"
                            | "speculative_retry"
                            | "memtable_flush_period_in_ms"
                            | "min_index_interval"
                            | "max_index_interval"
                            | "read_repair"
                            | "additional_write_policy"
                            | "cdc",
                            _,
                        ) => {}
                        (other, v) => {
                            return unsupported(format!("table option {other} = {v}"));
                        }
                    }
                }
                if !self.eat_kw("and") {
                    break;
                }
            }
        }
        Ok(Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            order,
            comment,
            default_ttl,
        })
    }

    /// `ALTER TABLE [ks.]t ADD column type`, one column: what keyscore's schema files use. Other
    /// ALTER statements are named as unsupported; `ADD IF NOT EXISTS` came with Cassandra 4.1
    /// (CASSANDRA-16916) and ScyllaDB has none, so the node, playing 4.0, refuses it as
    /// Cassandra 4.0 does, as a syntax error.
    fn alter(&mut self) -> PResult<Statement> {
        if !(self.eat_kw("table") || self.eat_kw("columnfamily")) {
            return match self.peek() {
                Some(Tok::Word(w)) => unsupported(format!("ALTER {}", w.to_ascii_uppercase())),
                _ => self.fail("expected TABLE"),
            };
        }
        let table = self.table_ref()?;
        if !self.eat_kw("add") {
            return match self.peek() {
                Some(Tok::Word(w)) => unsupported(format!(
                    "ALTER TABLE ... {} (only ADD is)",
                    w.to_ascii_uppercase()
                )),
                _ => self.fail("expected ADD"),
            };
        }
        if self.is_kw("if") {
            return self.fail("expected a column name (ADD IF NOT EXISTS needs Cassandra 4.1)");
        }
        if matches!(self.peek(), Some(Tok::Sym("("))) {
            return unsupported("adding several columns in one ALTER TABLE");
        }
        let column = self.ident()?;
        let ty = self.cql_type()?;
        if self.is_kw("static") {
            return unsupported("static columns");
        }
        Ok(Statement::AlterTableAdd { table, column, ty })
    }

    fn drop(&mut self) -> PResult<Statement> {
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropKeyspace {
                if_exists,
                name: self.ident()?,
            });
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropTable {
                if_exists,
                table: self.table_ref()?,
            });
        }
        match self.peek() {
            Some(Tok::Word(w)) => unsupported(format!("DROP {}", w.to_ascii_uppercase())),
            _ => self.fail("expected KEYSPACE or TABLE"),
        }
    }
}

/// Splits a script into statements at top-level `;` (outside strings, comments and
/// `BEGIN ... APPLY BATCH`). Used by tests to run the schema files.
pub fn split_script(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = src.chars().peekable();
    let mut in_batch = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                cur.push(c);
                for d in chars.by_ref() {
                    cur.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            ';' => {
                let upper = cur.to_ascii_uppercase();
                let words: Vec<&str> = upper.split_whitespace().collect();
                if words.first() == Some(&"BEGIN") {
                    in_batch = true;
                }
                let ends_batch = words.ends_with(&["APPLY", "BATCH"]);
                if in_batch && !ends_batch {
                    cur.push(';');
                    continue;
                }
                in_batch = false;
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_store_statements() {
        let (s, n) =
            parse("SELECT version, previous_version, WRITETIME(version) FROM keyscore.active_models WHERE key = ?")
                .unwrap();
        assert_eq!(n, 1);
        assert!(matches!(s, Statement::Select { .. }));
        let (_, n) = parse(
            "BEGIN BATCH UPDATE ks.a SET version = ?, previous_version = ? WHERE key = ?; \
             INSERT INTO ks.c (day, changed_at, key, version) VALUES (?, ?, ?, ?) APPLY BATCH",
        )
        .unwrap();
        assert_eq!(n, 7);
    }

    #[test]
    fn strings_unescape_quotes_and_uuids_lex_as_constants() {
        let (s, _) =
            parse("INSERT INTO t (a, b) VALUES ('it''s', 123e4567-e89b-12d3-a456-426614174000);")
                .unwrap();
        let Statement::Insert { values, .. } = s else {
            panic!("not an insert")
        };
        assert_eq!(values[0], Term::Lit(Literal::Str("it's".into())));
        assert!(matches!(values[1], Term::Lit(Literal::Uuid(_))));
    }

    #[test]
    fn unsupported_features_are_named() {
        let err = parse("DELETE FROM t USING TTL 10 WHERE a = 1").unwrap_err();
        assert_eq!(err.message, "TTL is not supported for DELETE");
        assert!(!err.syntax);
        let err = parse("SELEC a FROM t").unwrap_err();
        assert!(err.syntax);
    }

    #[test]
    fn ttls_parse_in_using_clauses_and_table_options() {
        let (s, n) =
            parse("INSERT INTO t (a, b) VALUES (?, ?) USING TTL ? AND TIMESTAMP ?").unwrap();
        assert_eq!(n, 4);
        let Statement::Insert { ttl, timestamp, .. } = s else {
            panic!("not an insert")
        };
        assert_eq!((ttl, timestamp), (Some(Term::Bind(2)), Some(Term::Bind(3))));
        let (s, _) = parse("UPDATE t USING TIMESTAMP 5 AND TTL 60 SET b = 1 WHERE a = 1").unwrap();
        let Statement::Update { ttl, .. } = s else {
            panic!("not an update")
        };
        assert_eq!(ttl, Some(Term::Lit(Literal::Int(60))));
        let (s, _) = parse(
            "CREATE TABLE t (a int, c int, b int, PRIMARY KEY (a, c)) \
             WITH CLUSTERING ORDER BY (c DESC) AND default_time_to_live = 3600",
        )
        .unwrap();
        let Statement::CreateTable {
            default_ttl, order, ..
        } = s
        else {
            panic!("not a create table")
        };
        assert_eq!((default_ttl, order), (3600, vec![("c".to_string(), true)]));
        let err =
            parse("BEGIN BATCH USING TTL 5 INSERT INTO t (a) VALUES (1) APPLY BATCH").unwrap_err();
        assert_eq!(
            err.message,
            "Global TTL on the BATCH statement is not supported."
        );
        let (s, _) = parse("SELECT TTL(b) FROM t WHERE a = 1").unwrap();
        let Statement::Select { selectors, .. } = s else {
            panic!("not a select")
        };
        assert_eq!(selectors, Some(vec![(Selector::Ttl("b".into()), None)]));
    }

    #[test]
    fn scripts_split_outside_strings_and_batches() {
        let parts = split_script(
            "INSERT INTO t (a) VALUES ('x;y');\nBEGIN BATCH INSERT INTO t (a) VALUES ('1'); \
             INSERT INTO t (a) VALUES ('2'); APPLY BATCH;\n-- done;\n",
        );
        assert_eq!(parts.len(), 2, "{parts:?}");
    }
}
