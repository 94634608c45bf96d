//! etcd's v3 API as Rust types: the vendored `.proto` files of etcd (v3.6 API, see
//! `proto/NOTICE.md`) compiled at build time with [protox](https://docs.rs/protox) (no system
//! `protoc`), [prost](https://docs.rs/prost) messages, [tonic](https://docs.rs/tonic) clients and
//! servers, and [pbjson](https://docs.rs/pbjson) serde impls that follow the grpc-gateway's JSON
//! mapping as etcd configures it (original field names, 64-bit integers as strings, bytes as
//! base64, default values omitted).
//!
//! No logic lives here.
//!
//! | module | proto package |
//! |---|---|
//! | [`etcdserverpb`] | `etcdserverpb`: KV, Watch, Lease, Cluster, Maintenance, Auth services |
//! | [`mvccpb`] | `mvccpb`: `KeyValue`, `Event` |
//! | [`authpb`] | `authpb`: `User`, `Role`, `Permission` |
//! | [`v3lockpb`] | `v3lockpb`: the Lock service |
//! | [`v3electionpb`] | `v3electionpb`: the Election service |
//! | [`peerpb`] | rusd's peer protocol between members (Raft messages, forwarding) |
//!
//! ```
//! use rusd_proto::etcdserverpb::RangeRequest;
//! let req = RangeRequest { key: b"foo".to_vec(), limit: 10, ..Default::default() };
//! assert_eq!(serde_json::to_string(&req).unwrap(), r#"{"key":"Zm9v","limit":"10"}"#);
//! ```

#![allow(missing_docs, clippy::all)] // generated code

/// etcd's `mvccpb` package.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package.
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: the v3 API services.
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package.
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package.
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// rusd's own peer protocol (member to member; no pbjson: the gateway never serves it).
pub mod peerpb {
    include!(concat!(env!("OUT_DIR"), "/peerpb.rs"));
}

/// The encoded `FileDescriptorSet` of every proto (for reflection and tests).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptor.bin"));
