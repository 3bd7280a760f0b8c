//! A consumed record's Kafka headers, read without trusting their names.
//!
//! rdkafka 0.39's accessors (`Headers::get`, `try_get`, `iter`, `get_as`) panic on a header
//! whose name is not UTF-8 (they unwrap the conversion), and any non-Java producer can write
//! one: such a record would stop every consumer that reads its headers, again after each
//! restart. [`Readable::readable`] reads each header on its own and leaves out one whose name
//! does not convert (no choreo header is one, and rdkafka cannot write it back). The workspace
//! forbids `unsafe`, so the name cannot be read from librdkafka directly: rdkafka's panic is
//! caught instead (the default panic hook still prints it, once per such header). Every choreo
//! reader of a consumed record's headers goes through here; the fuzz target `envelope`
//! (`integration-tests/fuzz`) holds such records in its corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rdkafka::message::{Header, Headers};

/// Headers whose entries can be read without panicking on a name that is not UTF-8.
pub trait Readable {
    /// The headers in order, those whose name (up to its first NUL byte, as librdkafka hands
    /// it over) is not UTF-8 left out.
    fn readable(&self) -> Vec<Header<'_, &[u8]>>;

    /// Whether a readable header is named `key` (without collecting them).
    fn has(&self, key: &str) -> bool;
}

/// The readable headers of `h`, in order, one at a time.
fn readable_iter<H: Headers>(h: &H) -> impl Iterator<Item = Header<'_, &[u8]>> {
    (0..h.count()).filter_map(|idx| {
        catch_unwind(AssertUnwindSafe(|| h.try_get(idx)))
            .ok()
            .flatten()
    })
}

impl<H: Headers> Readable for H {
    fn readable(&self) -> Vec<Header<'_, &[u8]>> {
        // Sized once: collected from a filter, the vector grew (and moved) three times for a
        // record with the envelope's ten headers.
        let mut all = Vec::with_capacity(self.count());
        all.extend(readable_iter(self));
        all
    }

    fn has(&self, key: &str) -> bool {
        readable_iter(self).any(|h| h.key == key)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedHeaders;

    use super::*;

    #[test]
    fn every_header_is_read_in_order_with_null_values() {
        let h = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some("e-1"),
            })
            .insert(Header::<&str> {
                key: "traceparent",
                value: None,
            })
            .insert(Header {
                key: "ce_id",
                value: Some("e-2"),
            });
        let read: Vec<(&str, Option<&[u8]>)> =
            h.readable().iter().map(|x| (x.key, x.value)).collect();
        assert_eq!(
            read,
            vec![
                ("ce_id", Some(&b"e-1"[..])),
                ("traceparent", None),
                ("ce_id", Some(&b"e-2"[..])),
            ]
        );
    }
}
