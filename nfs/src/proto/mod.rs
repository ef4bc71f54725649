//! NFSv3 and MOUNTv3 argument decoders and result encoders (RFC 1813).

pub mod mount3;
pub mod nfs3;
