//! Map keys and record field names as text: what the encoder takes from a serde map key.

use serde::Serialize;
use serde::ser::{self, Impossible};

use super::out::{EncodeError, err};

/// Takes a map key as text.
pub(crate) struct Key;

impl ser::Serializer for Key {
    type Ok = String;
    type Error = EncodeError;
    type SerializeSeq = Impossible<String, EncodeError>;
    type SerializeTuple = Impossible<String, EncodeError>;
    type SerializeTupleStruct = Impossible<String, EncodeError>;
    type SerializeTupleVariant = Impossible<String, EncodeError>;
    type SerializeMap = Impossible<String, EncodeError>;
    type SerializeStruct = Impossible<String, EncodeError>;
    type SerializeStructVariant = Impossible<String, EncodeError>;

    fn serialize_str(self, v: &str) -> Result<String, EncodeError> {
        Ok(v.to_owned())
    }
    fn serialize_char(self, v: char) -> Result<String, EncodeError> {
        Ok(v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        v: &'static str,
    ) -> Result<String, EncodeError> {
        Ok(v.to_owned())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<String, EncodeError> {
        v.serialize(self)
    }
    fn serialize_bool(self, _: bool) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_i8(self, _: i8) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_i16(self, _: i16) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_i32(self, _: i32) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_i64(self, _: i64) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_u8(self, _: u8) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_u16(self, _: u16) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_u32(self, _: u32) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_u64(self, _: u64) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_f32(self, _: f32) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_f64(self, _: f64) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_none(self) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_unit(self) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, EncodeError> {
        key_err()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        key_err()
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        key_err()
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        key_err()
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        key_err()
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        key_err()
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        key_err()
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        key_err()
    }
}

fn key_err<T>() -> Result<T, EncodeError> {
    err("an Avro map key or field name is a string")
}
