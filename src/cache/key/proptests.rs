//! Property tests of the key builder and the query splitter: arbitrary input never panics,
//! and different (host, path, kept query) never share a key.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// Text from bytes, with the delimiters that matter over-represented.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<u8>(), 0..max).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::string::string_regex(&format!("[a-zA-Z/?#&=;%:@.\\[\\]0-9 ]{{0,{max}}}"))
            .expect("regex"),
    ]
}

fn ignore_list() -> impl Strategy<Value = Vec<String>> {
    vec(
        prop_oneof![Just("utm".to_string()), Just("a".to_string()), text(4)],
        0..3,
    )
}

/// The parts a key is meant to distinguish, normalised the way the key normalises them.
fn identity(
    host: &str,
    path: &str,
    query: Option<&str>,
    ignore: &[String],
) -> (String, String, Option<String>) {
    (
        normalise_host(host),
        if path.is_empty() {
            "/".into()
        } else {
            path.into()
        },
        query
            .and_then(|q| kept_query(q, ignore))
            .map(|q| q.into_owned()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn different_parts_never_share_a_key(
        h1 in text(12), p1 in text(12), q1 in proptest::option::of(text(12)),
        h2 in text(12), p2 in text(12), q2 in proptest::option::of(text(12)),
        ignore in ignore_list(),
    ) {
        let k1 = build_key(&h1, &p1, q1.as_deref(), &ignore);
        let k2 = build_key(&h2, &p2, q2.as_deref(), &ignore);
        let same = identity(&h1, &p1, q1.as_deref(), &ignore) == identity(&h2, &p2, q2.as_deref(), &ignore);
        prop_assert_eq!(k1 == k2, same, "{:?} / {:?}", k1, k2);
    }

    /// The attack shape: a host carrying part of a path against the real host and path.
    #[test]
    fn a_host_never_moves_a_path(
        host in "[a-z]{1,8}", moved in "/[a-z/]{0,8}", path in "/[a-z/]{0,8}",
    ) {
        let attacker = build_key(&format!("{host}{moved}"), &path, None, &[]);
        let victim = build_key(&host, &format!("{moved}{path}"), None, &[]);
        prop_assert_ne!(attacker, victim);
    }

    #[test]
    fn query_splitter_keeps_exactly_the_unignored_parameters(q in text(24), ignore in ignore_list()) {
        let _ = ambiguous_query(&q, &ignore);
        if let Some(kept) = kept_query(&q, &ignore)
            && !ignore.is_empty()
        {
            for kv in kept.split('&') {
                let name = kv.split('=').next().unwrap_or("");
                prop_assert!(!ignore.iter().any(|i| i == name), "{} kept in {}", name, kept);
                prop_assert!(q.contains(kv));
            }
        }
    }

    /// A dropped parameter with `;` or an encoded `&`, `;`, `=` is always caught.
    #[test]
    fn cloaking_dropped_parameters_are_ambiguous(
        before in "[a-z0-9=]{0,6}", cloak in prop_oneof![Just(";"), Just("%26"), Just("%3b"), Just("%3B"), Just("%3d"), Just("%3D")],
        after in "[a-z0-9=]{0,6}",
    ) {
        let q = format!("id=1&utm={before}{cloak}{after}");
        prop_assert!(ambiguous_query(&q, &["utm".to_string()]));
        prop_assert!(!ambiguous_query(&q, &[]));
    }
}
