//! The worker's fast reader of payloads (`{"args": [...], "kwargs": {...}}`):
//! the JSON every encoder writes, read straight into the caller's values
//! (Python objects, through the binding) in one pass.
//!
//! It reads a strict subset and *declines* everything else, so that what it
//! does read means exactly what Python's `json` decoder (the worker's full
//! decoder, `conveyor/payload.py`) makes of it: it declines integers outside
//! i64 (Python's are unbounded), numbers no float holds, strings with a lone
//! surrogate escape or a control character, `NaN` and the other constants,
//! nesting deeper than [`MAX_READ_DEPTH`], bytes that are not UTF-8, and a
//! top level that is not an object with a list `args` and an object
//! `kwargs`. A declined payload goes to the full decoder, which runs it or
//! says why not. `tests/test_call_reader.py` holds the two together.

/// Deepest nesting read here (the encoders refuse past 64); deeper payloads
/// go to the full decoder.
pub const MAX_READ_DEPTH: usize = 100;

/// Largest payload a worker reads as it fetches (a whole batch at once);
/// a larger one is read only as its job starts, so a batch of big payloads
/// is never held as decoded values all at once (decoded objects take several
/// times their JSON's bytes).
pub const READ_AT_FETCH_MAX_LEN: usize = 4096;

/// Makes the caller's values; a `None` makes the reader decline.
pub trait CallBuilder {
    /// A value made.
    type Value;
    /// JSON `null`.
    fn null(&mut self) -> Option<Self::Value>;
    /// `true` or `false`.
    fn boolean(&mut self, value: bool) -> Option<Self::Value>;
    /// A number without fraction or exponent.
    fn int(&mut self, value: i64) -> Option<Self::Value>;
    /// A number with a fraction or an exponent (finite).
    fn float(&mut self, value: f64) -> Option<Self::Value>;
    /// A string.
    fn string(&mut self, value: &str) -> Option<Self::Value>;
    /// An array of the values made for its items.
    fn array(&mut self, items: Vec<Self::Value>) -> Option<Self::Value>;
    /// An object from its members in order; a key given twice keeps its
    /// first place and its last value (as Python's `dict` does).
    fn object(&mut self, members: Vec<(String, Self::Value)>) -> Option<Self::Value>;
    /// Whether a value is an array (`args`) or an object (`kwargs`).
    fn is_array(&self, value: &Self::Value) -> bool;
    /// See [`CallBuilder::is_array`].
    fn is_object(&self, value: &Self::Value) -> bool;
}

/// The `(args, kwargs)` of `payload`, or `None` where this reader declines.
pub fn read_call<B: CallBuilder>(payload: &[u8], builder: &mut B) -> Option<(B::Value, B::Value)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut reader = Reader {
        bytes: text.as_bytes(),
        at: 0,
    };
    reader.space();
    if reader.peek()? != b'{' {
        return None;
    }
    reader.at += 1;
    let (mut args, mut kwargs) = (None, None);
    reader.space();
    if reader.peek()? == b'}' {
        return None;
    }
    loop {
        reader.space();
        let key = reader.string()?;
        reader.space();
        reader.expect(b':')?;
        let value = reader.value(builder, 1)?;
        match key.as_str() {
            "args" => args = Some(value),
            "kwargs" => kwargs = Some(value),
            _ => {}
        }
        reader.space();
        match reader.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    reader.space();
    if reader.at != reader.bytes.len() {
        return None;
    }
    let (args, kwargs) = (args?, kwargs?);
    (builder.is_array(&args) && builder.is_object(&kwargs)).then_some((args, kwargs))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// JSON's whitespace (and Python's: the same four).
    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn value<B: CallBuilder>(&mut self, b: &mut B, depth: usize) -> Option<B::Value> {
        if depth > MAX_READ_DEPTH {
            return None;
        }
        self.space();
        match self.peek()? {
            b'n' => self.literal(b"null").and_then(|_| b.null()),
            b't' => self.literal(b"true").and_then(|_| b.boolean(true)),
            b'f' => self.literal(b"false").and_then(|_| b.boolean(false)),
            b'"' => {
                let s = self.string()?;
                b.string(&s)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.peek()? == b']' {
                    self.at += 1;
                    return b.array(items);
                }
                loop {
                    items.push(self.value(b, depth + 1)?);
                    self.space();
                    match self.next()? {
                        b',' => continue,
                        b']' => return b.array(items),
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                self.space();
                if self.peek()? == b'}' {
                    self.at += 1;
                    return b.object(members);
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.space();
                    self.expect(b':')?;
                    members.push((key, self.value(b, depth + 1)?));
                    self.space();
                    match self.next()? {
                        b',' => continue,
                        b'}' => return b.object(members),
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(b),
            _ => None,
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`, the grammar of
    /// JSON and of Python's scanner; an int without fraction or exponent.
    fn number<B: CallBuilder>(&mut self, b: &mut B) -> Option<B::Value> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') && self.after_is_digit() {
            self.at += 1;
            self.digits();
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.at;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if matches!(self.peek(), Some(b'0'..=b'9')) {
                self.digits();
                float = true;
            } else {
                // Python's scanner ends the number before a bare `e`; what
                // follows is then not JSON anyway.
                self.at = mark;
            }
        }
        // ASCII only, so this slice is valid UTF-8.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        if float {
            let value: f64 = text.parse().ok()?;
            value.is_finite().then_some(())?;
            b.float(value)
        } else {
            b.int(text.parse().ok()?)
        }
    }

    fn after_is_digit(&self) -> bool {
        matches!(self.bytes.get(self.at + 1), Some(b'0'..=b'9'))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }

    /// A string's value; declines control characters (Python's strict
    /// mode refuses them) and lone surrogates (Python keeps them; Rust's
    /// strings cannot).
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let run = self.at;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // The input is valid UTF-8 and the run stops only at ASCII bytes.
            out.push_str(std::str::from_utf8(&self.bytes[run..self.at]).ok()?);
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => match self.next()? {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let unit = self.hex4()?;
                        let c = if (0xD800..0xDC00).contains(&unit) {
                            // A pair, or a lone surrogate (declined).
                            self.literal(b"\\u")?;
                            let low = self.hex4()?;
                            if !(0xDC00..0xE000).contains(&low) {
                                return None;
                            }
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            unit
                        };
                        out.push(char::from_u32(c)?);
                    }
                    _ => return None,
                },
                _ => return None, // a control character
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let text = std::str::from_utf8(digits).ok()?;
        if !text.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(text, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values as text, to compare what was read.
    struct Show;

    impl CallBuilder for Show {
        type Value = String;
        fn null(&mut self) -> Option<String> {
            Some("None".into())
        }
        fn boolean(&mut self, v: bool) -> Option<String> {
            Some(if v { "True" } else { "False" }.into())
        }
        fn int(&mut self, v: i64) -> Option<String> {
            Some(format!("{v}"))
        }
        fn float(&mut self, v: f64) -> Option<String> {
            Some(format!("{v:?}f"))
        }
        fn string(&mut self, v: &str) -> Option<String> {
            Some(format!("{v:?}"))
        }
        fn array(&mut self, items: Vec<String>) -> Option<String> {
            Some(format!("[{}]", items.join(", ")))
        }
        fn object(&mut self, members: Vec<(String, String)>) -> Option<String> {
            let shown: Vec<String> = members.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
            Some(format!("{{{}}}", shown.join(", ")))
        }
        fn is_array(&self, v: &String) -> bool {
            v.starts_with('[')
        }
        fn is_object(&self, v: &String) -> bool {
            v.starts_with('{')
        }
    }

    fn read(text: &str) -> Option<(String, String)> {
        read_call(text.as_bytes(), &mut Show)
    }

    #[test]
    fn reads_what_the_encoders_write() {
        let (args, kwargs) = read(
            r#"{"args":[1,-2,0.5,1e3,"a\"b\u00e9\ud83d\ude00",true,null,[]],"kwargs":{"k":{}}}"#,
        )
        .unwrap();
        assert_eq!(args, r#"[1, -2, 0.5f, 1000.0f, "a\"bé😀", True, None, []]"#);
        assert_eq!(kwargs, r#"{"k": {}}"#);
        assert!(read(" {\"kwargs\" : {} ,\n \"args\": [ ] } ").is_some());
    }

    #[test]
    fn declines_what_python_reads_differently_or_refuses() {
        for text in [
            r#"{"args":[9223372036854775808],"kwargs":{}}"#,
            r#"{"args":[1e999],"kwargs":{}}"#,
            r#"{"args":[NaN],"kwargs":{}}"#,
            r#"{"args":["\ud800"],"kwargs":{}}"#,
            "{\"args\":[\"a\u{1}\"],\"kwargs\":{}}",
            r#"{"args":[01],"kwargs":{}}"#,
            r#"{"args":[1.],"kwargs":{}}"#,
            r#"{"args":[],"kwargs":{}} x"#,
            r#"{"args":{},"kwargs":{}}"#,
            r#"{"args":[]}"#,
            r#"[]"#,
        ] {
            assert_eq!(read(text), None, "{text}");
        }
        let deep = format!(
            "{{\"args\":{}{},\"kwargs\":{{}}}}",
            "[".repeat(MAX_READ_DEPTH + 1),
            "]".repeat(MAX_READ_DEPTH + 1)
        );
        assert_eq!(read(&deep), None);
        assert!(read_call(b"{\"args\":[\"\xff\"],\"kwargs\":{}}", &mut Show).is_none());
    }
}
