//! The two protobuf messages etcd stores in its backend, encoded and decoded by hand (the
//! engine does not depend on a protobuf library).
//!
//! * `mvccpb.KeyValue` (`key` bucket): `key = 1` bytes, `create_revision = 2`,
//!   `mod_revision = 3`, `version = 4` int64, `value = 5` bytes, `lease = 6` int64.
//! * `leasepb.Lease` (`lease` bucket): `ID = 1`, `TTL = 2`, `RemainingTTL = 3` int64.
//!
//! proto3 rules: fields are written in number order, zero values are left out, an int64 is a
//! varint of its two's complement. Decoding skips unknown fields.

use crate::codec::{put_varint, take_varint};
use crate::kv::KeyValue;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const BYTES: u64 = 2;
const FIXED32: u64 = 5;

fn put_int(out: &mut Vec<u8>, field: u64, v: i64) {
    if v != 0 {
        put_varint(out, (field << 3) | VARINT);
        put_varint(out, v as u64);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    if !v.is_empty() {
        put_varint(out, (field << 3) | BYTES);
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// `mvccpb.KeyValue` of a put.
pub(crate) fn encode_key_value(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(kv.key.len() + kv.value.len() + 40);
    put_bytes(&mut out, 1, &kv.key);
    put_int(&mut out, 2, kv.create_revision);
    put_int(&mut out, 3, kv.mod_revision);
    put_int(&mut out, 4, kv.version);
    put_bytes(&mut out, 5, &kv.value);
    put_int(&mut out, 6, kv.lease);
    out
}

/// `mvccpb.KeyValue` of a tombstone: the key only, as etcd writes it.
pub(crate) fn encode_tombstone(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 6);
    put_bytes(&mut out, 1, key);
    out
}

/// `leasepb.Lease{ID, TTL}`.
pub(crate) fn encode_lease(id: i64, ttl: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(22);
    put_int(&mut out, 1, id);
    put_int(&mut out, 2, ttl);
    out
}

/// One decoded field: number and either an integer or bytes.
enum Field<'a> {
    Int(u64, u64),
    Bytes(u64, &'a [u8]),
}

/// Decodes the fields of a message; `None` if it is malformed.
fn fields(mut input: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let tag = take_varint(&mut input)?;
        let field = tag >> 3;
        match tag & 7 {
            VARINT => out.push(Field::Int(field, take_varint(&mut input)?)),
            BYTES => {
                let len = usize::try_from(take_varint(&mut input)?).ok()?;
                if len > input.len() {
                    return None;
                }
                let (bytes, rest) = input.split_at(len);
                input = rest;
                out.push(Field::Bytes(field, bytes));
            }
            FIXED64 => input = input.get(8..)?,
            FIXED32 => input = input.get(4..)?,
            _ => return None,
        }
    }
    Some(out)
}

/// Decodes `mvccpb.KeyValue`; `None` if it is malformed.
pub(crate) fn decode_key_value(bytes: &[u8]) -> Option<KeyValue> {
    let mut kv = KeyValue::default();
    for f in fields(bytes)? {
        match f {
            Field::Bytes(1, b) => kv.key = b.to_vec(),
            Field::Bytes(5, b) => kv.value = b.to_vec(),
            Field::Int(2, v) => kv.create_revision = v as i64,
            Field::Int(3, v) => kv.mod_revision = v as i64,
            Field::Int(4, v) => kv.version = v as i64,
            Field::Int(6, v) => kv.lease = v as i64,
            _ => {}
        }
    }
    Some(kv)
}

/// Decodes `leasepb.Lease` into `(ID, TTL)`; `None` if it is malformed.
pub(crate) fn decode_lease(bytes: &[u8]) -> Option<(i64, i64)> {
    let (mut id, mut ttl) = (0, 0);
    for f in fields(bytes)? {
        match f {
            Field::Int(1, v) => id = v as i64,
            Field::Int(2, v) => ttl = v as i64,
            _ => {}
        }
    }
    Some((id, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes taken from a snapshot of etcd 3.4.23 (`etcdctl put --lease=... withlease x`).
    const ETCD_KV: &[u8] =
        b"\n\twithlease\x10\x05\x18\x05 \x01*\x01x0\x88\xbe\xee\xbd\xc2\xc1\xe8\x869";
    const ETCD_LEASE: &[u8] = b"\x08\x88\xbe\xee\xbd\xc2\xc1\xe8\x869\x10d";

    #[test]
    fn matches_etcds_bytes() {
        let kv = decode_key_value(ETCD_KV).unwrap();
        assert_eq!(kv.key, b"withlease");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        assert_eq!(kv.value, b"x");
        assert!(kv.lease > 0);
        assert_eq!(encode_key_value(&kv), ETCD_KV);
        let (id, ttl) = decode_lease(ETCD_LEASE).unwrap();
        assert_eq!((id, ttl), (kv.lease, 100));
        assert_eq!(encode_lease(id, ttl), ETCD_LEASE);
        assert_eq!(encode_tombstone(b"baz"), b"\n\x03baz");
        assert_eq!(decode_key_value(b"\n\x03baz").unwrap().key, b"baz");
    }

    #[test]
    fn round_trips_and_bad_input() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 1 << 40,
            mod_revision: i64::MAX,
            version: 3,
            value: vec![9; 300],
            lease: -5,
        };
        assert_eq!(decode_key_value(&encode_key_value(&kv)).unwrap(), kv);
        // Unknown fields of every wire type are skipped.
        let mut with_unknown = encode_key_value(&kv);
        with_unknown.extend_from_slice(&[
            0x78, 1, 0x81, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0x85, 1, 1, 2, 3, 4,
        ]);
        assert_eq!(decode_key_value(&with_unknown).unwrap(), kv);
        assert!(
            decode_key_value(&[0x0a, 5, b'a']).is_none(),
            "truncated bytes"
        );
        assert!(decode_key_value(&[0x10]).is_none(), "truncated varint");
        assert!(decode_key_value(&[0x0b]).is_none(), "group wire type");
        assert_eq!(decode_key_value(&[]).unwrap(), KeyValue::default());
    }
}
