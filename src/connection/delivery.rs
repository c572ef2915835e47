//! What the kernel says about a client's reading: how much of a connection's output the client
//! has taken so far. The write timeout asks it before cutting a connection whose writes make no
//! progress, so that a client that still reads, however slowly, is told apart from one that
//! stopped: a `write()` succeeds only once the kernel's send buffer has room, and with a large
//! autotuned buffer a client reading 1 KiB/s frees it so slowly that no write succeeds for
//! minutes although the client is reading.
//!
//! On Linux the count is the bytes the client acknowledged (`TCP_INFO`'s `tcpi_bytes_acked`).
//! A client's TCP stack acknowledges into its receive buffer and announces room again only once
//! a good part of it is free (at least a segment; on loopback, with 64 KiB segments, half the
//! buffer), so a slow reader's acknowledgements come in steps that can be a minute apart. When
//! the client's socket is on this host (loopback, or one of its own addresses), the kernel can
//! also be asked how much of what it received the client has not read yet (`sock_diag`, the
//! interface of `ss`), and bytes read is then exact. Elsewhere there is no count: the write
//! timeout keeps its plain rule.

use mio::net::TcpStream;

/// The bytes of this connection's output the client has taken: acknowledged, less what sits
/// unread in its socket when that socket is on this host; and whether that is what the client
/// has: false for a connection the client reset, or for a client on this host whose socket is
/// gone (it closed): then the count is what it acknowledged, more than it read when it closed
/// without reading everything. `None` where the system does not say.
#[cfg(target_os = "linux")]
pub(crate) fn counted(stream: &TcpStream) -> Option<(u64, bool)> {
    use std::os::fd::AsRawFd;
    let acked = linux::bytes_acked(stream.as_raw_fd())?;
    // Not connected any more (the client reset it): what it read is not known.
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return Some((acked, false)) };
    let (local_ip, peer_ip) = (local.ip().to_canonical(), peer.ip().to_canonical());
    if !(peer_ip.is_loopback() || peer_ip == local_ip) {
        return Some((acked, true));
    }
    // The client's socket is the one whose local end is our peer and whose peer is us.
    let unread = linux::unread_by(
        std::net::SocketAddr::new(peer_ip, peer.port()),
        std::net::SocketAddr::new(local_ip, local.port()),
    );
    Some((acked.saturating_sub(unread.unwrap_or(0)), unread.is_some()))
}

/// Elsewhere the kernel is not asked.
#[cfg(not(target_os = "linux"))]
pub(crate) fn counted(_stream: &TcpStream) -> Option<(u64, bool)> {
    None
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::mem::{MaybeUninit, size_of};
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// `tcpi_bytes_acked` of the socket (Linux 4.2 and later; 0 before).
    pub(super) fn bytes_acked(fd: RawFd) -> Option<u64> {
        let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes; the kernel writes at most that much.
        let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len) };
        if rc != 0 {
            return None;
        }
        // SAFETY: zero-initialised, and the kernel filled what it knows.
        let info = unsafe { info.assume_init() };
        Some(info.tcpi_bytes_acked)
    }

    /// `NETLINK_SOCK_DIAG` (linux/netlink.h).
    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    /// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
    const SOCK_DIAG_BY_FAMILY: u16 = 20;

    /// `struct inet_diag_sockid` (linux/inet_diag.h): ports and addresses in network order.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct SockId {
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u8; 16],
        dst: [u8; 16],
        interface: u32,
        cookie: [u32; 2],
    }

    /// `struct nlmsghdr` followed by `struct inet_diag_req_v2`.
    #[repr(C)]
    struct Request {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    /// Offset of `idiag_rqueue` in `struct inet_diag_msg`: four bytes, the socket id, `idiag_expires`.
    const RQUEUE_AT: usize = 4 + size_of::<SockId>() + 4;
    /// `struct nlmsghdr`.
    const HEADER_BYTES: usize = 16;

    /// Bytes received and not yet read by the TCP socket on this host whose local end is
    /// `local` and whose peer is `peer` (one exact lookup, no dump), if there is one.
    pub(super) fn unread_by(local: SocketAddr, peer: SocketAddr) -> Option<u64> {
        let mut id = SockId { cookie: [u32::MAX; 2], ..SockId::default() };
        id.sport = local.port().to_be_bytes();
        id.dport = peer.port().to_be_bytes();
        let family = match (local.ip(), peer.ip()) {
            (IpAddr::V4(l), IpAddr::V4(p)) => {
                id.src[..4].copy_from_slice(&l.octets());
                id.dst[..4].copy_from_slice(&p.octets());
                libc::AF_INET
            }
            (l, p) => {
                id.src = v6(l);
                id.dst = v6(p);
                libc::AF_INET6
            }
        };
        let request = Request {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: libc::NLM_F_REQUEST as u16,
            seq: 1,
            pid: 0,
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: u32::MAX,
            id,
        };
        ask(&request).ok().flatten()
    }

    fn v6(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// Sends `request` on a new netlink socket and reads the answer (the kernel answers an
    /// exact lookup before `sendto` returns).
    fn ask(request: &Request) -> io::Result<Option<u64>> {
        // SAFETY: plain socket creation; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; the family is set below.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `request` and `kernel` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                (request as *const Request).cast(),
                size_of::<Request>(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut answer = [0u8; 512];
        // SAFETY: `answer` is writable for its length.
        let got =
            unsafe { libc::recv(socket.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), libc::MSG_DONTWAIT) };
        let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        Ok(rqueue(&answer[..got]))
    }

    /// The receive queue in a `SOCK_DIAG_BY_FAMILY` answer; `None` for an error (no such
    /// socket) or anything unexpected.
    fn rqueue(answer: &[u8]) -> Option<u64> {
        let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
        if kind != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        let at = HEADER_BYTES + RQUEUE_AT;
        let field = |at: usize| Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?));
        // `idiag_inode`, after rqueue, wqueue and uid: 0 for a socket its owner closed, whose
        // queue is no longer what it will read (it was dropped, or never will be): no answer.
        if field(at + 12)? == 0 {
            return None;
        }
        field(at).map(u64::from)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};

        #[test]
        fn the_kernel_tells_what_a_local_client_has_not_read() {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let (client_end, server_end) = (client.local_addr().unwrap(), server.local_addr().unwrap());
            assert_eq!(unread_by(client_end, server_end), Some(0));
            server.write_all(&[7; 1000]).unwrap();
            // Loopback delivers within the write; look until the kernel shows it (bounded).
            let mut seen = None;
            for _ in 0..100 {
                seen = unread_by(client_end, server_end);
                if seen == Some(1000) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(seen, Some(1000));
            client.read_exact(&mut [0; 400]).unwrap();
            assert_eq!(unread_by(client_end, server_end), Some(600));
            assert_eq!(bytes_acked(std::os::fd::AsRawFd::as_raw_fd(&server)), Some(1000));
            // No socket with that pair: nothing to say.
            let stranger = SocketAddr::from(([127, 0, 0, 1], 1));
            assert_eq!(unread_by(stranger, server_end), None);
            // A client that closed (unread bytes or not) reads nothing more: nothing to say.
            drop(client);
            assert_eq!(unread_by(client_end, server_end), None);
        }
    }
}
