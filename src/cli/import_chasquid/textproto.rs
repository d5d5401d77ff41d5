//! The protobuf text format, as chasquid writes `chasquid.conf` and `domains/*/users` (Go's
//! `prototext`): a sans-I/O parser from bytes to a tree of named fields, with line numbers.
//!
//! It follows the "Text Format Language Specification" (protobuf.dev): `#` comments,
//! `name: value`, `name { ... }` / `name < ... >` (the colon optional before a message),
//! `name: [a, b]` lists, `,` or `;` after a field, adjacent string literals concatenated, and
//! C-style escapes in strings. Strings are bytes: chasquid's `bytes` fields (salts, hashes)
//! hold raw UTF-8 and `\x..` / octal escapes. Extensions (`[pkg.ext]`) and `Any` are refused.

/// One field as written; a repeated field appears once per value.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// Line of the field name (1-based).
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string literal (escapes decoded; maybe not UTF-8).
    Str(Vec<u8>),
    /// An identifier: `true`, `false`, an enum name, `inf`, ...
    Ident(String),
    /// A number, as written (typed by the caller, which knows the field's type).
    Number(String),
    Message(Vec<Field>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// Parses a whole message (the file's top level).
pub fn parse(text: &[u8]) -> Result<Vec<Field>, ParseError> {
    let mut parser = Parser {
        lexer: Lexer {
            src: text,
            pos: 0,
            line: 1,
        },
        peeked: None,
    };
    parser.fields(None)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(Vec<u8>),
    Number(String),
    Punct(u8),
    Eof,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Str(_) => "a string".into(),
            Token::Number(n) => format!("number {n}"),
            Token::Punct(c) => format!("'{}'", char::from(*c)),
            Token::Eof => "the end of the file".into(),
        }
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

impl Lexer<'_> {
    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            msg: msg.into(),
        }
    }

    fn peek_byte(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek_byte()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    /// Whitespace and `#` comments.
    fn skip_blank(&mut self) {
        while let Some(b) = self.peek_byte() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                    self.bump();
                }
                b'#' => {
                    while self.peek_byte().is_some_and(|b| b != b'\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
    }

    /// The next token and the line it starts on.
    fn next(&mut self) -> Result<(Token, usize), ParseError> {
        self.skip_blank();
        let line = self.line;
        let Some(b) = self.peek_byte() else {
            return Ok((Token::Eof, line));
        };
        let token = match b {
            b'{' | b'}' | b'<' | b'>' | b'[' | b']' | b':' | b',' | b';' => {
                self.bump();
                Token::Punct(b)
            }
            b'"' | b'\'' => Token::Str(self.string()?),
            b'-' | b'.' | b'0'..=b'9' => Token::Number(self.number()?),
            b if b.is_ascii_alphabetic() || b == b'_' => Token::Ident(self.ident()),
            _ => return Err(self.err(format!("unexpected character {:?}", char::from(b)))),
        };
        Ok((token, line))
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while self
            .peek_byte()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.bump();
        }
        // Only ASCII bytes were taken.
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    /// `-`? then digits, letters, `_`, `.` and exponent signs: decimal, hex, octal, float,
    /// `-inf`. The field's type decides later whether it is acceptable.
    fn number(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        if self.peek_byte() == Some(b'-') {
            self.bump();
            self.skip_blank();
        }
        let body = self.pos;
        let mut prev = 0u8;
        while let Some(b) = self.peek_byte() {
            let exponent_sign = (b == b'+' || b == b'-') && matches!(prev, b'e' | b'E');
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign) {
                break;
            }
            prev = b;
            self.bump();
        }
        if self.pos == body {
            return Err(self.err("'-' not followed by a number"));
        }
        let negative = body > start;
        let digits = String::from_utf8_lossy(&self.src[body..self.pos]);
        Ok(if negative {
            format!("-{digits}")
        } else {
            digits.into_owned()
        })
    }

    /// A quoted string with its escapes decoded; a newline inside is an error.
    fn string(&mut self) -> Result<Vec<u8>, ParseError> {
        let quote = self.bump().unwrap_or(b'"');
        let mut out = Vec::new();
        loop {
            match self.peek_byte() {
                None | Some(b'\n') => return Err(self.err("unterminated string")),
                Some(b) if b == quote => {
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.bump();
                    self.escape(&mut out)?;
                }
                Some(b) => {
                    self.bump();
                    out.push(b);
                }
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        let Some(c) = self.bump() else {
            return Err(self.err("unterminated string"));
        };
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'\'' | b'"' | b'?' => Some(c),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        match c {
            b'0'..=b'7' => {
                let value = self.digits(u32::from(c - b'0'), 8, 2);
                let byte = u8::try_from(value)
                    .map_err(|_| self.err(format!("octal escape \\{value:o} is over 255")))?;
                out.push(byte);
            }
            b'x' | b'X' => {
                if !self.peek_byte().is_some_and(|b| b.is_ascii_hexdigit()) {
                    return Err(self.err("\\x not followed by a hex digit"));
                }
                // At most two hex digits: always below 256.
                let value = self.digits(0, 16, 2);
                out.push(value as u8);
            }
            b'u' => self.unicode_escape(out, 4)?,
            b'U' => self.unicode_escape(out, 8)?,
            _ => {
                return Err(self.err(format!(
                    "unknown escape \\{}",
                    char::from(c).escape_default()
                )));
            }
        }
        Ok(())
    }

    /// Up to `max` more digits of `radix`, accumulated onto `value`.
    fn digits(&mut self, mut value: u32, radix: u32, max: usize) -> u32 {
        for _ in 0..max {
            let Some(d) = self.peek_byte().and_then(|b| char::from(b).to_digit(radix)) else {
                break;
            };
            self.bump();
            value = value * radix + d;
        }
        value
    }

    fn unicode_escape(&mut self, out: &mut Vec<u8>, len: usize) -> Result<(), ParseError> {
        let start = self.pos;
        let value = self.digits(0, 16, len);
        if self.pos - start != len {
            return Err(self.err(format!("\\u / \\U escape needs {len} hex digits")));
        }
        let c = char::from_u32(value)
            .ok_or_else(|| self.err(format!("escape U+{value:04X} is not a character")))?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Token, usize)>,
}

impl Parser<'_> {
    fn next(&mut self) -> Result<(Token, usize), ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn peek(&mut self) -> Result<&Token, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        // Just filled.
        Ok(self.peeked.as_ref().map_or(&Token::Eof, |(t, _)| t))
    }

    fn err_at(line: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            msg: msg.into(),
        }
    }

    /// Fields until `end` (a closing bracket), or the end of the file when `end` is None.
    fn fields(&mut self, end: Option<u8>) -> Result<Vec<Field>, ParseError> {
        let mut fields = Vec::new();
        loop {
            let (token, line) = self.next()?;
            match (token, end) {
                (Token::Eof, None) => return Ok(fields),
                (Token::Punct(c), Some(e)) if c == e => return Ok(fields),
                (Token::Ident(name), _) => self.field(name, line, &mut fields)?,
                (Token::Punct(b'['), _) => {
                    return Err(Self::err_at(line, "extension fields are not supported"));
                }
                (other, Some(e)) => {
                    return Err(Self::err_at(
                        line,
                        format!(
                            "expected a field name or '{}', found {}",
                            char::from(e),
                            other.describe()
                        ),
                    ));
                }
                (other, None) => {
                    return Err(Self::err_at(
                        line,
                        format!("expected a field name, found {}", other.describe()),
                    ));
                }
            }
        }
    }

    /// One field after its name: its value(s) pushed onto `out`, then an optional separator.
    fn field(&mut self, name: String, line: usize, out: &mut Vec<Field>) -> Result<(), ParseError> {
        let colon = *self.peek()? == Token::Punct(b':');
        if colon {
            self.next()?;
        }
        let (token, value_line) = self.next()?;
        match token {
            Token::Punct(open @ (b'{' | b'<')) => {
                let fields = self.fields(Some(closing(open)))?;
                out.push(Field {
                    name,
                    line,
                    value: Value::Message(fields),
                });
            }
            Token::Punct(b'[') => {
                for value in self.list(colon, value_line)? {
                    out.push(Field {
                        name: name.clone(),
                        line,
                        value,
                    });
                }
            }
            scalar if colon => {
                let value = self.scalar(scalar, value_line)?;
                out.push(Field { name, line, value });
            }
            other => {
                return Err(Self::err_at(
                    value_line,
                    format!("expected ':' after {name:?}, found {}", other.describe()),
                ));
            }
        }
        if matches!(self.peek()?, Token::Punct(b',' | b';')) {
            self.next()?;
        }
        Ok(())
    }

    /// `[a, b]` after its `[`: scalars (only after a colon) or messages.
    fn list(&mut self, colon: bool, line: usize) -> Result<Vec<Value>, ParseError> {
        let mut values = Vec::new();
        if *self.peek()? == Token::Punct(b']') {
            self.next()?;
            return Ok(values);
        }
        loop {
            let (token, at) = self.next()?;
            let value = match token {
                Token::Punct(open @ (b'{' | b'<')) => {
                    Value::Message(self.fields(Some(closing(open)))?)
                }
                scalar if colon => self.scalar(scalar, at)?,
                other => {
                    let msg = format!("expected a message in the list, found {}", other.describe());
                    return Err(Self::err_at(at, msg));
                }
            };
            values.push(value);
            match self.next()? {
                (Token::Punct(b','), _) => continue,
                (Token::Punct(b']'), _) => return Ok(values),
                (other, at) => {
                    let msg = format!(
                        "expected ',' or ']' in the list, found {}",
                        other.describe()
                    );
                    return Err(Self::err_at(at.max(line), msg));
                }
            }
        }
    }

    /// A scalar value; adjacent string literals are one string.
    fn scalar(&mut self, token: Token, line: usize) -> Result<Value, ParseError> {
        match token {
            Token::Str(mut bytes) => {
                while let Token::Str(more) = self.peek()? {
                    bytes.extend_from_slice(more);
                    self.next()?;
                }
                Ok(Value::Str(bytes))
            }
            Token::Ident(s) => Ok(Value::Ident(s)),
            Token::Number(n) => Ok(Value::Number(n)),
            other => Err(Self::err_at(
                line,
                format!("expected a value, found {}", other.describe()),
            )),
        }
    }
}

fn closing(open: u8) -> u8 {
    if open == b'<' { b'>' } else { b'}' }
}

/// Typed access to field values, with the field's line in the error.
impl Field {
    fn type_error(&self, what: &str) -> ParseError {
        ParseError {
            line: self.line,
            msg: format!("{:?}: expected {what}", self.name),
        }
    }

    /// A `string` field: a literal that is valid UTF-8 (as Go's prototext requires).
    pub fn string(&self) -> Result<String, ParseError> {
        match &self.value {
            Value::Str(bytes) => String::from_utf8(bytes.clone()).map_err(|_| ParseError {
                line: self.line,
                msg: format!("{:?}: the string is not valid UTF-8", self.name),
            }),
            _ => Err(self.type_error("a string")),
        }
    }

    /// A `bytes` field.
    pub fn bytes(&self) -> Result<&[u8], ParseError> {
        match &self.value {
            Value::Str(bytes) => Ok(bytes),
            _ => Err(self.type_error("a string")),
        }
    }

    /// An integer field: decimal, `0x` hex or `0` octal, maybe negative.
    pub fn int(&self) -> Result<i64, ParseError> {
        let Value::Number(text) = &self.value else {
            return Err(self.type_error("an integer"));
        };
        parse_int(text).ok_or_else(|| self.type_error("an integer"))
    }

    pub fn bool(&self) -> Result<bool, ParseError> {
        match &self.value {
            Value::Ident(s) if matches!(s.as_str(), "true" | "True" | "t") => Ok(true),
            Value::Ident(s) if matches!(s.as_str(), "false" | "False" | "f") => Ok(false),
            Value::Number(n) if n == "1" => Ok(true),
            Value::Number(n) if n == "0" => Ok(false),
            _ => Err(self.type_error("true or false")),
        }
    }

    pub fn message(&self) -> Result<&[Field], ParseError> {
        match &self.value {
            Value::Message(fields) => Ok(fields),
            _ => Err(self.type_error("a message { ... }")),
        }
    }
}

fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Field {
        let mut fields = parse(text.as_bytes()).unwrap();
        assert_eq!(fields.len(), 1, "{text:?}: {fields:?}");
        fields.remove(0)
    }

    #[test]
    fn scalars_table() {
        let cases: &[(&str, Value)] = &[
            ("a: \"x\"", Value::Str(b"x".to_vec())),
            ("a: 'x'", Value::Str(b"x".to_vec())),
            ("a: \"x\" 'y' \"z\"", Value::Str(b"xyz".to_vec())),
            ("a: \"\"", Value::Str(Vec::new())),
            ("a: 50", Value::Number("50".into())),
            ("a: -7", Value::Number("-7".into())),
            ("a: - 7", Value::Number("-7".into())),
            ("a: 0x1f", Value::Number("0x1f".into())),
            ("a: 1.5e-3", Value::Number("1.5e-3".into())),
            ("a: true", Value::Ident("true".into())),
            ("a:true;", Value::Ident("true".into())),
            ("  # comment\na: 1, # trailing\n", Value::Number("1".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&one(text).value, want, "{text:?}");
        }
    }

    #[test]
    fn escapes_table() {
        let cases: &[(&str, &[u8])] = &[
            (r#""\x00\xff\x7""#, &[0, 0xff, 7]),
            (r#""\0\12\101\377""#, &[0, 0o12, b'A', 0xff]),
            (r#""\1234""#, &[0o123, b'4']),
            (
                r#""\a\b\f\n\r\t\v\\\'\"\?""#,
                b"\x07\x08\x0c\n\r\t\x0b\\'\"?",
            ),
            (r#""\u00e9\U0001F600""#, "é😀".as_bytes()),
            ("\"ñ\"", "ñ".as_bytes()),
        ];
        for (lit, want) in cases {
            let f = one(&format!("a: {lit}"));
            assert_eq!(f.bytes().unwrap(), *want, "{lit}");
        }
    }

    #[test]
    fn raw_bytes_are_kept() {
        // Go's prototext writes valid UTF-8 sequences in bytes fields raw.
        let mut text = b"salt: \"".to_vec();
        text.extend_from_slice(&[0xd7, 0x9e, b'\\', b'x', b'8', b'9']);
        text.push(b'"');
        let fields = parse(&text).unwrap();
        assert_eq!(fields[0].bytes().unwrap(), &[0xd7, 0x9e, 0x89]);
    }

    #[test]
    fn messages_lists_and_lines() {
        let text = "users: {\n  key: \"alice\"\n  value: <\n    denied {}\n  >\n}\nusers {\n}\nx: [\"a\", 'b']\ny [{}, {z: 1}]\nw: []\n";
        let fields = parse(text.as_bytes()).unwrap();
        let names: Vec<(&str, usize)> = fields.iter().map(|f| (f.name.as_str(), f.line)).collect();
        assert_eq!(
            names,
            [
                ("users", 1),
                ("users", 7),
                ("x", 9),
                ("x", 9),
                ("y", 10),
                ("y", 10)
            ]
        );
        let inner = fields[0].message().unwrap();
        assert_eq!(inner[0].string().unwrap(), "alice");
        assert_eq!(inner[1].line, 3);
        let value = inner[1].message().unwrap();
        assert_eq!(value[0].name, "denied");
        assert_eq!(value[0].line, 4);
        assert_eq!(value[0].message().unwrap(), &[]);
        assert_eq!(fields[3].string().unwrap(), "b");
        assert_eq!(fields[5].message().unwrap()[0].int().unwrap(), 1);
    }

    #[test]
    fn errors_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("a: \"x", 1, "unterminated string"),
            ("a: \"x\ny\"", 1, "unterminated string"),
            ("\n\na 5", 3, "expected ':' after \"a\""),
            ("a {\n b: 1\n", 3, "expected a field name or '}'"),
            ("a {\n b: 1\n>", 3, "expected a field name or '}'"),
            ("}", 1, "expected a field name"),
            ("a: \"\\q\"", 1, "unknown escape"),
            ("a: \"\\400\"", 1, "over 255"),
            ("a: \"\\x\"", 1, "hex digit"),
            ("a: \"\\u12\"", 1, "4 hex digits"),
            ("a: \"\\uD800\"", 1, "not a character"),
            ("a: -", 1, "'-' not followed"),
            ("a: @", 1, "unexpected character"),
            ("[ext.foo]: 1", 1, "extension"),
            ("a: [1 2]", 1, "expected ',' or ']'"),
            ("a [1]", 1, "expected a message in the list"),
            ("a: }", 1, "expected a value"),
        ];
        for (text, line, msg) in cases {
            let err = parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.msg.contains(msg), "{text:?}: {err}");
        }
    }

    #[test]
    fn typed_access_table() {
        assert_eq!(one("a: 0x10").int().unwrap(), 16);
        assert_eq!(one("a: 010").int().unwrap(), 8);
        assert_eq!(one("a: -3").int().unwrap(), -3);
        assert_eq!(one("a: 0").int().unwrap(), 0);
        assert!(one("a: 1.5").int().is_err());
        assert!(one("a: \"1\"").int().is_err());
        assert!(one("a: 99999999999999999999").int().is_err());
        for (text, want) in [
            ("a: true", true),
            ("a: t", true),
            ("a: 1", true),
            ("a: False", false),
        ] {
            assert_eq!(one(text).bool().unwrap(), want, "{text}");
        }
        assert!(one("a: yes").bool().is_err());
        assert!(one("a: 1").string().is_err());
        assert!(one("a: \"\\xff\"").string().is_err());
        assert!(one("a: 1").message().is_err());
        let err = one("\na: x").string().unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.msg, "\"a\": expected a string");
    }
}
