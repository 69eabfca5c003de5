//! Version ordering as each package manager defines it.

use std::cmp::Ordering;

/// dpkg's order of `[EPOCH:]UPSTREAM[-REVISION]` (deb-version(7)): `~` sorts before
/// everything, even the end of the string; letters before other characters.
pub(crate) fn dpkg(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_evr(a);
    let (eb, ub, rb) = split_evr(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// `[EPOCH:]VERSION[-RELEASE]`, the shape dpkg and rpm versions share: the epoch (0 when
/// absent or not a number), the version, and what follows the last `-` (empty when none).
fn split_evr(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = i32::from(a[i]) - i32::from(b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// rpm's order of `[EPOCH:]VERSION-RELEASE` (rpmvercmp on each part; also what pacman's
/// vercmp and, near enough, apk use).
pub(crate) fn rpm(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split_evr(a);
    let (eb, vb, rb) = split_evr(b);
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| rpmvercmp(ra, rb))
}

#[allow(clippy::many_single_char_names)] // rpm's own names for the two cursors
fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    loop {
        while i < a.len() && !a[i].is_ascii_alphanumeric() && a[i] != b'~' && a[i] != b'^' {
            i += 1;
        }
        while j < b.len() && !b[j].is_ascii_alphanumeric() && b[j] != b'~' && b[j] != b'^' {
            j += 1;
        }
        let (ta, tb) = (a.get(i).copied(), b.get(j).copied());
        if ta == Some(b'~') || tb == Some(b'~') {
            if ta != Some(b'~') {
                return Ordering::Greater;
            }
            if tb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ta == Some(b'^') || tb == Some(b'^') {
            if i >= a.len() {
                return Ordering::Less;
            }
            if j >= b.len() {
                return Ordering::Greater;
            }
            if ta != Some(b'^') {
                return Ordering::Greater;
            }
            if tb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let seg = |s: &[u8], k: &mut usize| -> (usize, usize) {
            let start = *k;
            while *k < s.len()
                && (if numeric {
                    s[*k].is_ascii_digit()
                } else {
                    s[*k].is_ascii_alphabetic()
                })
            {
                *k += 1;
            }
            (start, *k)
        };
        let (sa, ea) = seg(a, &mut i);
        let (sb, eb) = seg(b, &mut j);
        if sb == eb {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut x, mut y) = (&a[sa..ea], &b[sb..eb]);
        if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            match x.len().cmp(&y.len()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match x.cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn dpkg_order() {
        assert_eq!(dpkg("608-2", "590-2"), Greater);
        assert_eq!(dpkg("1.0~rc1-1", "1.0-1"), Less);
        assert_eq!(dpkg("1:0.1-1", "9.9-1"), Greater);
        assert_eq!(dpkg("1.0-1", "1.0-1"), Equal);
        assert_eq!(dpkg("1.0a-1", "1.0+-1"), Less);
        assert_eq!(dpkg("1.10", "1.9"), Greater);
        assert_eq!(dpkg("2.36.1-8+deb12u1", "2.36.1-8"), Greater);
    }

    #[test]
    fn rpm_order() {
        assert_eq!(rpm("1.0-1", "1.0-2"), Less);
        assert_eq!(rpm("1.10-1", "1.9-1"), Greater);
        assert_eq!(rpm("1.0~rc1-1", "1.0-1"), Less);
        assert_eq!(rpm("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(rpm("1.0^git1-1", "1.0-1"), Greater);
        assert_eq!(rpm("1.0a-1", "1.0-1"), Greater);
        assert_eq!(rpm("2.0-1", "2.0-1"), Equal);
    }
}
