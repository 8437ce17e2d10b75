//! TLS 1.3 records sealed by the hub itself, for a subscription streamed over TLS.
//!
//! Why: measured with `bench/compare.sh --tls`, an idle subscriber cost 16 KB on the direct
//! path over rustls, against 2 KB in plaintext. rustls keeps per connection what a general TLS
//! endpoint needs (a 4 KiB read buffer for incoming records, the handshake state, buffers for
//! both directions), and a subscription needs none of it once its request is read: it only
//! sends. So, as kernel TLS offload does, the session's traffic secrets are taken from rustls
//! (`dangerous_extract_secrets`, TLS 1.3 only, after rustls has written everything it had
//! queued) and rustls is dropped; what stays is one AEAD key, its IV and the sequence number.
//!
//! Each write seals one record (RFC 8446 section 5.2: header `17 03 03 len`, the data, inner
//! content type 23, the AEAD tag; nonce = IV xor the 64-bit sequence number, never reused: the
//! number only grows, and no one else holds the key). The record exists only while it is
//! being written. Incoming bytes are not decrypted: a subscriber sends nothing but a
//! `close_notify` and its TCP FIN, and the FIN ends the stream. Limits: after 2^24 records
//! (below AES-GCM's confidentiality limit of 2^24.5, RFC 8446 section 5.5) the stream is ended
//! rather than rekeyed, and the client resumes with `Last-Event-ID`; a `KeyUpdate` from the
//! client is not seen (browsers do not send one on such connections).

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::ConnectionTrafficSecrets;
use std::io::IoSlice;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

/// Most plaintext bytes in one record (RFC 8446 section 5.1).
const MAX_PLAINTEXT: usize = 1 << 14;
/// Records sealed with one key before the stream ends instead.
const MAX_RECORDS: u64 = 1 << 24;
const HEADER: usize = 5;
const TAG: usize = 16;
/// TLS's content type for application data (also the inner content type in TLS 1.3).
const APPLICATION_DATA: u8 = 23;

/// A TCP connection on which the hub writes TLS 1.3 application-data records itself.
pub(crate) struct SealedStream {
    tcp: TcpStream,
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
    /// The record being written; empty (and unallocated) between writes.
    record: Vec<u8>,
    sent: usize,
}

/// Why a session could not be handed over (it then stays with rustls).
#[derive(Debug)]
pub(crate) struct NotSealable;

impl SealedStream {
    /// Takes over a session whose handshake is done and whose queued records are written.
    pub(crate) fn take_over(
        tcp: TcpStream,
        connection: rustls::ServerConnection,
    ) -> Result<SealedStream, NotSealable> {
        if connection.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Err(NotSealable);
        }
        let secrets = connection
            .dangerous_extract_secrets()
            .map_err(|_| NotSealable)?;
        let (seq, secrets) = secrets.tx;
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(NotSealable),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| NotSealable)?;
        let iv: [u8; 12] = iv.as_ref().try_into().map_err(|_| NotSealable)?;
        Ok(SealedStream {
            tcp,
            key: LessSafeKey::new(key),
            iv,
            seq,
            record: Vec::new(),
            sent: 0,
        })
    }

    /// Seals up to one record's worth of `slices` into `record`; the plaintext bytes taken.
    fn seal(&mut self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        if self.seq >= MAX_RECORDS {
            return Err(std::io::Error::other(
                "TLS key used for its most records: the stream ends, the client resumes",
            ));
        }
        let len: usize = slices
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            .min(MAX_PLAINTEXT);
        let mut record = Vec::with_capacity(HEADER + len + 1 + TAG);
        let length = u16::try_from(len + 1 + TAG).expect("a record fits in 16 bits");
        record.extend_from_slice(&[APPLICATION_DATA, 3, 3]);
        record.extend_from_slice(&length.to_be_bytes());
        let mut left = len;
        for slice in slices {
            let take = slice.len().min(left);
            record.extend_from_slice(&slice[..take]);
            left -= take;
            if left == 0 {
                break;
            }
        }
        record.push(APPLICATION_DATA);
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        let (header, body) = record.split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&*header),
                body,
            )
            .map_err(|_| std::io::Error::other("sealing a TLS record failed"))?;
        record.extend_from_slice(tag.as_ref());
        self.seq += 1;
        self.record = record;
        self.sent = 0;
        Ok(len)
    }

    /// Writes what is left of the record; then frees it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.record.len() {
            match self.tcp.try_write(&self.record[self.sent..]) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.record = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes some of `slices`: the record in flight first, then one new record.
    pub(crate) fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_send(cx))?;
        let taken = self.seal(slices)?;
        // As much of it as the socket takes now; the rest is written by `poll_flush_out`.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_send(cx)
    }

    /// The client's FIN (or a failed connection); what it sends before, a `close_notify` in
    /// practice, is read and dropped undecrypted.
    pub(crate) fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        crate::stream::Socket::poll_gone(&mut self.tcp, cx)
    }
}
