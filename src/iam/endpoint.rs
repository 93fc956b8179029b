//! Reading the AWS region off an RDS endpoint name, so users rarely have to pass `--region`.
//!
//! Endpoint shapes (case-insensitive, an optional trailing dot allowed):
//!
//! - `<id>.<hash>.<region>.rds.amazonaws.com` — instances; `cluster-`, `cluster-ro-`,
//!   `cluster-custom-`, `proxy-` and `shardgrp-` hashes have the same shape, and so does a proxy
//!   endpoint `<name>.endpoint.proxy-<hash>.<region>.rds.amazonaws.com`.
//! - `<id>.<hash>.<region>.rds.amazonaws.com.cn` — older China endpoints.
//! - `<id>.<hash>.rds.<region>.amazonaws.com.cn` — current China endpoints; the same `rds.<region>`
//!   order is used by GovCloud (`.amazonaws.com`) and the ISO partitions (`.c2s.ic.gov`,
//!   `.sc2s.sgov.gov`).
//!
//! Anything else (custom DNS names, IP addresses) gives `None`: RDS only accepts tokens signed for
//! its own endpoint name anyway.

/// Region from an RDS endpoint name: `<id>.<hash>.<region>.rds.amazonaws.com` (also
/// `.rds.amazonaws.com.cn`, `.rds.<region>.amazonaws.com.cn`, cluster, reader, custom and proxy
/// forms); `None` otherwise.
pub fn region_from_endpoint(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }

    // `<...>.<region>.rds.amazonaws.com[.cn]`
    for suffix in [
        &["rds", "amazonaws", "com"][..],
        &["rds", "amazonaws", "com", "cn"][..],
    ] {
        if let Some(rest) = strip_suffix_labels(&labels, suffix)
            && let [_, .., region] = rest
            && looks_like_region(region)
        {
            return Some((*region).to_owned());
        }
    }

    // `<...>.rds.<region>.<partition domain>`
    for suffix in [
        &["amazonaws", "com", "cn"][..],
        &["amazonaws", "com"][..],
        &["c2s", "ic", "gov"][..],
        &["sc2s", "sgov", "gov"][..],
    ] {
        if let Some(rest) = strip_suffix_labels(&labels, suffix)
            && let [_, .., "rds", region] = rest
            && looks_like_region(region)
        {
            return Some((*region).to_owned());
        }
    }
    None
}

/// `labels` without the trailing `suffix` labels, if it ends with them.
fn strip_suffix_labels<'a, 'b>(labels: &'a [&'b str], suffix: &[&str]) -> Option<&'a [&'b str]> {
    let cut = labels.len().checked_sub(suffix.len())?; // so both slices below are in bounds
    (labels[cut..] == *suffix).then_some(&labels[..cut])
}

/// `xx-word[-word...]-N`: `us-east-1`, `us-gov-west-1`, `cn-northwest-1`, `us-isob-east-1`.
fn looks_like_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    let [country, words @ .., number] = parts.as_slice() else {
        return false;
    };
    country.len() == 2
        && country.bytes().all(|b| b.is_ascii_lowercase())
        && !words.is_empty()
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commercial_endpoints() {
        let cases = [
            ("mydb.c9akciq32.us-east-1.rds.amazonaws.com", "us-east-1"),
            (
                "mydb.cluster-abc123xyz.eu-west-1.rds.amazonaws.com",
                "eu-west-1",
            ),
            (
                "mydb.cluster-ro-abc123xyz.eu-west-1.rds.amazonaws.com",
                "eu-west-1",
            ),
            (
                "mydb.cluster-custom-abc.ap-southeast-2.rds.amazonaws.com",
                "ap-southeast-2",
            ),
            (
                "myproxy.proxy-abc123.us-west-2.rds.amazonaws.com",
                "us-west-2",
            ),
            (
                "ro.endpoint.proxy-abc123.us-west-2.rds.amazonaws.com",
                "us-west-2",
            ),
            (
                "db.shardgrp-abc.il-central-1.rds.amazonaws.com",
                "il-central-1",
            ),
            (
                "MyDB.Cluster-ABC.EU-CENTRAL-1.RDS.AMAZONAWS.COM",
                "eu-central-1",
            ),
            ("mydb.c9akciq32.us-east-1.rds.amazonaws.com.", "us-east-1"),
        ];
        for (host, region) in cases {
            assert_eq!(
                region_from_endpoint(host).as_deref(),
                Some(region),
                "{host}"
            );
        }
    }

    #[test]
    fn china_govcloud_and_iso_endpoints() {
        let cases = [
            ("mydb.abc.rds.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            (
                "mydb.cluster-abc.rds.cn-northwest-1.amazonaws.com.cn",
                "cn-northwest-1",
            ),
            (
                "mydb.proxy-abc.rds.cn-northwest-1.amazonaws.com.cn",
                "cn-northwest-1",
            ),
            (
                "mydb.cluster-ro-abc.cn-northwest-1.rds.amazonaws.com.cn",
                "cn-northwest-1",
            ),
            ("mydb.abc.rds.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
            ("mydb.abc.us-gov-east-1.rds.amazonaws.com", "us-gov-east-1"),
            (
                "mydb.cluster-abc.rds.us-iso-east-1.c2s.ic.gov",
                "us-iso-east-1",
            ),
            (
                "mydb.abc.rds.us-isob-east-1.sc2s.sgov.gov",
                "us-isob-east-1",
            ),
        ];
        for (host, region) in cases {
            assert_eq!(
                region_from_endpoint(host).as_deref(),
                Some(region),
                "{host}"
            );
        }
    }

    #[test]
    fn non_rds_names_give_none() {
        for host in [
            "",
            ".",
            "localhost",
            "127.0.0.1",
            "[::1]",
            "db.internal.example.com",
            "rds.amazonaws.com",
            "us-east-1.rds.amazonaws.com",
            "rds.us-east-1.amazonaws.com",
            "elb-name.elb.us-east-2.amazonaws.com",
            "mydb.abc.notaregion.rds.amazonaws.com",
            "mydb.abc.rds.amazonaws.com.cn",
            "mydb..us-east-1.rds.amazonaws.com",
            "mydb.abc.us-east-1.rds.amazonaws.com.evil.example",
            "mydb.abc.rds.us-east-1.amazonaws.com.cn.evil",
        ] {
            assert_eq!(region_from_endpoint(host), None, "{host}");
        }
    }

    #[test]
    fn region_shape() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "us-isob-east-1",
        ] {
            assert!(looks_like_region(ok), "{ok}");
        }
        for bad in [
            "us",
            "us-1",
            "useast-1",
            "us-east",
            "us-east-x",
            "US-EAST-1",
            "u-east-1",
        ] {
            assert!(!looks_like_region(bad), "{bad}");
        }
    }
}
