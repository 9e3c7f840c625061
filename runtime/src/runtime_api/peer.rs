//! Who is on the other end of a Runtime API connection. In network mode `host` a sandbox's
//! Runtime API listens on the host's loopback, where every local process can reach it; the
//! sandbox runs as a uid of its own, and a connection is served only when its client socket
//! belongs to that uid (see docs/design/001-native-jail.md).
//!
//! TCP has no `SO_PEERCRED`, but the kernel lists every socket of a network namespace with its
//! owner's uid in `/proc/net/tcp` (and `tcp6`). The client's entry is the one whose local
//! address is the accepted connection's peer and whose remote address is our listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Looking up a peer's uid failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The socket table could not be read.
    #[error("reading {table}: {source}")]
    Table {
        /// `/proc/net/tcp` or `/proc/net/tcp6`.
        table: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// No socket in the table matches (the client already closed, or it is not local).
    #[error("no local socket {peer} connected to {local}")]
    NotFound {
        /// The client's address.
        peer: SocketAddr,
        /// Our end.
        local: SocketAddr,
    },
}

/// The uid owning the client socket at `peer` connected to our `local` end.
pub fn owner_uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, PeerError> {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text =
        std::fs::read_to_string(table).map_err(|source| PeerError::Table { table, source })?;
    find_owner(&text, local, peer).ok_or(PeerError::NotFound { peer, local })
}

/// Finds the uid of the entry `peer` → `local` in the text of a `/proc/net/tcp{,6}` table.
fn find_owner(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    // "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid ..."
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let _slot = fields.next()?;
        let from = parse_address(fields.next()?)?;
        let to = parse_address(fields.next()?)?;
        let uid = fields.nth(4)?;
        (from == peer && to == local)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// Parses `0100007F:1F91` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each
/// 32-bit word of the address in host byte order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_socket_not_the_accepted_one() {
        let word = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let lo = word([127, 0, 0, 1]);
        // The listener, our accepted end (owned by the host, uid 0), the client (uid 2000000007).
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:A411 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
             1: {lo}:A411 {lo}:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
             2: {lo}:C350 {lo}:A411 01 00000000:00000000 00:00000000 00000000 2000000007        0 3 1 0 20 4 30 10 -1\n"
        );
        let local: SocketAddr = "127.0.0.1:42001".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(find_owner(&table, local, peer), Some(2_000_000_007));
        let stranger: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(find_owner(&table, local, stranger), None);
    }

    #[test]
    fn reads_this_process_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = owner_uid(local, peer).unwrap();
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn parses_ipv6_loopback() {
        let text = format!(
            "{}:1F91",
            "0".repeat(24) + &format!("{:08X}", u32::from_ne_bytes([0, 0, 0, 1]))
        );
        assert_eq!(parse_address(&text), Some("[::1]:8081".parse().unwrap()));
    }
}
