//! An Avro body being read: the primitive reads every decode plan is made of, each checked.
//!
//! A read past the end is [`BinaryError::Truncated`]; a varint longer than 10 bytes, an `int`
//! out of range, a negative length, a length over [`MAX_AVRO_ALLOCATION`], a boolean other than
//! 0 or 1 and a string that is not UTF-8 are [`BinaryError::Malformed`]. Nothing is allocated
//! here: bytes and strings are borrowed from the body.

use super::BinaryError;

/// The most one Avro length prefix (a string, bytes or array) may claim: a record whose prefix
/// claims more is malformed, refused before anything that large is allocated. (apache-avro's
/// limit is process-wide and set once; its own default is 512 MiB, which one hostile record
/// could make every reader allocate.) Kafka's default record limit is 1 MB.
pub const MAX_AVRO_ALLOCATION: usize = 16 * 1024 * 1024;

/// How deep records, arrays, maps and unions may nest in one body (a recursive schema lets a
/// body nest as deep as it is long; each level costs stack).
pub const MAX_DEPTH: u32 = 128;

/// The unread rest of a body.
#[derive(Debug)]
pub struct Input<'de> {
    /// The bytes not read yet.
    pub rest: &'de [u8],
    depth: u32,
}

#[cold]
#[inline(never)]
fn truncated(what: &str) -> BinaryError {
    BinaryError::Truncated(format!("the Avro body ended inside {what}"))
}

/// A malformed-body error saying `msg`.
#[cold]
pub fn malformed(msg: impl Into<String>) -> BinaryError {
    BinaryError::Malformed(msg.into())
}

#[cold]
#[inline(never)]
fn bad_length(n: i64) -> BinaryError {
    if n < 0 {
        malformed(format!("a negative length {n}"))
    } else {
        malformed(format!(
            "a length of {n} bytes, over the limit of {MAX_AVRO_ALLOCATION}"
        ))
    }
}

#[cold]
#[inline(never)]
fn not_utf8(b: &[u8]) -> BinaryError {
    match std::str::from_utf8(b) {
        Err(e) => malformed(format!("a string that is not UTF-8: {e}")),
        Ok(_) => malformed("a string that is not UTF-8"),
    }
}

impl<'de> Input<'de> {
    /// The whole of `body`, unread.
    pub fn new(body: &'de [u8]) -> Self {
        Input {
            rest: body,
            depth: 0,
        }
    }

    /// Goes one level deeper into nested values (malformed past [`MAX_DEPTH`]).
    #[inline]
    pub fn enter(&mut self) -> Result<(), BinaryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(malformed(format!("values nested over {MAX_DEPTH} deep")));
        }
        Ok(())
    }

    /// Comes back from one level of [`Input::enter`].
    #[inline]
    pub fn leave(&mut self) {
        self.depth -= 1;
    }

    /// The next `n` bytes (`what` names them in the error when the body is shorter).
    #[inline]
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'de [u8], BinaryError> {
        if n > self.rest.len() {
            return Err(truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A zig-zag varint `long`.
    #[inline]
    pub fn long(&mut self) -> Result<i64, BinaryError> {
        // One byte: every small number, length and index.
        if let Some(&b) = self.rest.first()
            && b < 0x80
        {
            self.rest = &self.rest[1..];
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_slow()
    }

    #[inline(never)]
    fn long_slow(&mut self) -> Result<i64, BinaryError> {
        let mut raw: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                #[allow(clippy::cast_possible_wrap)]
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        if self.rest.len() >= 10 {
            Err(malformed("a varint longer than 10 bytes"))
        } else {
            Err(truncated("a number"))
        }
    }

    /// A zig-zag varint `int`.
    #[inline]
    pub fn int(&mut self) -> Result<i32, BinaryError> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| malformed(format!("{v} is out of range for an int")))
    }

    /// A boolean: one byte, 0 or 1.
    #[inline]
    pub fn boolean(&mut self) -> Result<bool, BinaryError> {
        match self.take(1, "a boolean")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(malformed(format!("{b} is not a boolean"))),
        }
    }

    /// A `float`: 4 bytes, little-endian.
    #[inline]
    pub fn float(&mut self) -> Result<f32, BinaryError> {
        let b = self.take(4, "a float")?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `double`: 8 bytes, little-endian.
    #[inline]
    pub fn double(&mut self) -> Result<f64, BinaryError> {
        let b = self.take(8, "a double")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }

    /// A length prefix: not negative, at most [`MAX_AVRO_ALLOCATION`].
    #[inline]
    pub fn length(&mut self) -> Result<usize, BinaryError> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(n) if n <= MAX_AVRO_ALLOCATION => Ok(n),
            _ => Err(bad_length(n)),
        }
    }

    /// `bytes`: a length, then that many bytes.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'de [u8], BinaryError> {
        let n = self.length()?;
        self.take(n, "bytes")
    }

    /// `string`: bytes that are UTF-8.
    #[inline]
    pub fn str(&mut self) -> Result<&'de str, BinaryError> {
        let n = self.length()?;
        let b = self.take(n, "a string")?;
        std::str::from_utf8(b).map_err(|_| not_utf8(b))
    }

    /// A union branch index, checked against the union's `branches`.
    #[inline]
    pub fn branch(&mut self, branches: usize) -> Result<usize, BinaryError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < branches)
            .ok_or_else(|| malformed(format!("union index {i} out of range (0..{branches})")))
    }

    /// The item count of the next block of an array or map (0: the end), its byte size skipped
    /// when the count is negative. `total` is the count read so far, kept at most
    /// [`MAX_AVRO_ALLOCATION`] items.
    #[inline]
    pub fn block(&mut self, total: &mut usize) -> Result<usize, BinaryError> {
        let n = self.long()?;
        let count = if n < 0 {
            self.long()?;
            n.checked_neg()
                .ok_or_else(|| malformed(format!("a block count of {n}")))?
        } else {
            n
        };
        let count = usize::try_from(count).map_err(|_| malformed("a block count out of range"))?;
        match total.checked_add(count) {
            Some(t) if t <= MAX_AVRO_ALLOCATION => {
                *total = t;
                Ok(count)
            }
            _ => Err(malformed(format!(
                "a collection of over {MAX_AVRO_ALLOCATION} items"
            ))),
        }
    }

    /// Reads an array's (or, `map`, a map's) blocks to their end, calling `item` for each item
    /// (after reading a map entry's key, checked as a string): what passing over one takes.
    pub fn each_item<E: From<BinaryError>>(
        &mut self,
        map: bool,
        mut item: impl FnMut(&mut Self) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut total = 0;
        loop {
            let n = self.block(&mut total)?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                if map {
                    self.str()?;
                }
                item(self)?;
            }
        }
    }
}
