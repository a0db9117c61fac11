//! Tests of `cdr`.
use super::*;
use crate::domain::{corpus_file, corpus_files};
use proptest::prelude::*;

const SUMMITRABZ: &str = "summitrabz_2015_inbound_answered_playback_moh.xml";

fn xml(name: &str) -> RawCdr {
    parse(&corpus_file("xml", name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(name: &str) -> RawCdr {
    parse(&corpus_file("json", name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Headline facts common to every parseable sample.
fn check(cdr: &RawCdr, uuid: &str, direction: Option<&str>, cause: &str, callflows: usize) {
    assert_eq!(cdr.uuid(), Some(uuid));
    assert_eq!(cdr.direction(), direction);
    assert_eq!(cdr.var("hangup_cause"), Some(cause));
    assert_eq!(cdr.callflows.len(), callflows);
}

#[test]
fn every_corpus_file_but_summitrabz_parses() {
    for (sub, format) in [("xml", CdrFormat::Xml), ("json", CdrFormat::Json)] {
        for (name, doc) in corpus_files(sub) {
            let result = parse(&doc);
            if name == SUMMITRABZ {
                assert!(result.is_err(), "{name} must not parse");
                continue;
            }
            let cdr = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cdr.format, format, "{name}");
            assert!(cdr.uuid().is_some() && !cdr.callflows.is_empty(), "{name}");
            assert!(cdr.var("hangup_cause").is_some(), "{name}");
        }
    }
}

#[test]
fn summitrabz_is_rejected_with_position_and_element() {
    let doc = corpus_file("xml", SUMMITRABZ);
    let err = parse(&doc).unwrap_err();
    let msg = err.to_string();
    // First damage: `<sip_full_from><sip:1001@10.0.0.8>;tag=f92e5207</sip_full_from>`.
    assert!(msg.starts_with("XML not well-formed at byte "), "{msg}");
    assert!(msg.contains("</sip_full_from>") && msg.contains("<sip:1001@10.0.0.8>"), "{msg}");
    let at = err.offset().unwrap() as usize;
    assert!(doc[at..].starts_with(b"</sip_full_from>"), "{msg}");
}

#[test]
fn ccm_2014_a_leg_call_rejected() {
    let cdr = xml("ccm_openbts_2014_aleg_bridge_call_rejected.xml");
    check(&cdr, "f26e6ecb-6328-4889-9c01-76e5ebd8afad", Some("inbound"), "CALL_REJECTED", 1);
    assert_eq!(cdr.core_uuid.as_deref(), Some("45b2a75b-9aa2-4d92-9296-f2e7460e98ce"));
    assert_eq!(cdr.switchname, None);
    assert_eq!(cdr.variables[0], ("direction".into(), "inbound".into()));
    assert_eq!(cdr.var("sip_from_uri"), Some("IMSI510555550000884@127.0.0.1:5062"));
    assert_eq!(cdr.var("execute_on_answer"), Some("sched_hangup +480 alloted_timeout"));
    assert_eq!(cdr.var("originated_legs"), Some("662d289b-9565-4357-87f0-b855a99ad8b7;Outbound Call;6285342628278"));
    assert_eq!(cdr.app_log.len(), 15);
    assert_eq!(cdr.app_log[0].app_stamp, Some(1418250885257776));
    assert_eq!(cdr.app_log[12].app_data, "execute_on_answer=sched_hangup +480 alloted_timeout");
    let cf = &cdr.callflows[0];
    assert_eq!(cf.attr("unique-id"), Some("8d8ec6f2-a4af-436b-bdb9-0f1ea07953ec"));
    assert_eq!(cf.extension.as_ref().unwrap().name, "openbts");
    assert_eq!(cf.profile.get("chan_name"), Some("sofia/openbts/IMSI510555550000884@127.0.0.1:5062"));
    assert_eq!(cf.profile.origination.len(), 1);
    assert_eq!(cf.profile.originatee[0].get("uuid"), Some("662d289b-9565-4357-87f0-b855a99ad8b7"));
    assert!(cf.profile.originator.is_empty());
    assert_eq!(cf.time("answered_time"), Some(0));
    assert_eq!(cf.time("bridged_time"), Some(1418250890693901));
    assert_eq!(cf.times.len(), 11);
}

#[test]
fn ccm_2015_b_leg_has_originator() {
    let cdr = xml("ccm_openbts_2015_bleg_local_call_answered.xml");
    check(&cdr, "2605af5c-f1e8-47a5-a9ce-833f051c40c5", Some("outbound"), "NORMAL_CLEARING", 1);
    assert_eq!(cdr.var("sip_destination_url"), Some("sip:IMSI510555550000081@127.0.0.1:5062"));
    assert_eq!(cdr.var("originator_codec"), Some("GSM@8000h@20i"));
    assert!(cdr.app_log.is_empty());
    let cf = &cdr.callflows[0];
    assert_eq!(cf.attr("clone-of"), Some("5e633a3f-418c-4b68-8d50-dfdb284a347e"));
    assert_eq!(cf.extension, None);
    assert_eq!(cf.profile.originator[0].get("uuid"), cdr.var("originating_leg_uuid"));
}

#[test]
fn ccm_2015_inbound_samples() {
    let cdr = xml("ccm_openbts_2015_inbound_answered_zero_billsec.xml");
    check(&cdr, "0006a2fa-b032-43e8-9d70-708f363fe3b7", Some("inbound"), "NORMAL_CLEARING", 1);
    assert_eq!(cdr.var("sip_full_from"), Some("<sip:IMSI510555550000087@127.0.0.1:5062>;tag=OBTSzyvmhqbgkpanxqbg"));
    assert_eq!(cdr.var("_localstr"), Some("Pulsa anda tidak cukup."));
    assert_eq!(cdr.app_log[12].app_data, "endaga_i18n Your account doesn't have sufficient funds.");

    let cdr = xml("ccm_openbts_2015_inbound_unanswered_received.xml");
    check(&cdr, "44999f0d-e76b-4bd3-bfdf-3239d487e45b", Some("inbound"), "NORMAL_CLEARING", 1);
    assert_eq!(cdr.var("last_arg"), Some("res="));
    assert_eq!(cdr.app_log[7].app_data, r#"endaga_i18n Your balance is %(account_bal)s.|{"account_bal": 100}"#);
    assert_eq!(cdr.var("endpoint_disposition"), Some("RECEIVED"));
}

#[test]
fn nazim_2008_has_no_uuid_variable() {
    let cdr = xml("fscontrib_nazim_xmlcdrd_2008_outbound_record_session.xml");
    assert_eq!(cdr.var("uuid"), None);
    check(&cdr, "6f32e2f8-38d1-43a7-b6ea-215bbfe6a314", None, "NORMAL_CLEARING", 1);
    assert_eq!((cdr.core_uuid.as_deref(), cdr.switchname.as_deref()), (None, None));
    assert!(cdr.channel_data.is_empty());
    assert_eq!(cdr.var("caller_id"), Some("\"Mikey\" <1160>"));
    assert_eq!(cdr.var("bridge_channel"), Some("OpenZAP/1:23/2137991400"));
    assert_eq!(cdr.var("read_rate"), Some("8000"));
    assert!(cdr.app_log.iter().any(|a| a.app_name == "record_session"));
    assert_eq!(cdr.callflows[0].profile.originatee[0].get("chan_name"), Some("OpenZAP/1:23/2137991400"));
}

#[test]
fn tinycdr_2009_originator_cancel() {
    let cdr = xml("tinycdr_2009_gateway_originator_cancel.xml");
    check(&cdr, "91353230-461f-11de-aa7f-b10b4edc0c92", None, "ORIGINATOR_CANCEL", 1);
    assert_eq!(cdr.var("proto_specific_hangup_cause"), Some("sip:487"));
    assert_eq!(cdr.var("start_stamp"), Some("2009-05-21 10:53:46"));
    assert_eq!(cdr.var("effective_caller_id_name"), Some("Extension 1000"));
    assert_eq!(cdr.callflows[0].profile.get("caller_id_name"), Some("Jayson Vaughn"));
    assert_eq!(cdr.app_log[0].app_stamp, None);
}

#[test]
fn wikipbx_2007_uuid_comes_from_the_caller_profile() {
    let cdr = xml("wikipbx_2007_inbound_unallocated_legacy.xml");
    assert_eq!(cdr.var("uuid"), None);
    check(&cdr, "e760c6c6-26ad-11dc-ab66-857a738b9477", None, "UNALLOCATED", 1);
    assert_eq!(cdr.variables[0], ("sip_via_rport".into(), "5060".into()));
    assert_eq!(cdr.var("sip_req_uri"), Some("wikipbx@69.60.109.39:5080"));
    assert!(cdr.var("switch_r_sdp").unwrap().starts_with("v=0  o=root 19339 19339 IN IP4 69.60.109.39"));
    assert_eq!(cdr.app_log.len(), 3);
    assert_eq!(cdr.app_log[0].app_data, "conf_code=");
    let cf = &cdr.callflows[0];
    assert_eq!(cf.attrs, vec![("dialplan".into(), "enum,XML".into())]);
    let times: Vec<_> = cf.times.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        times,
        [
            ("created_time", 1183168926735180),
            ("answered_time", 1183168927763921),
            ("hangup_time", 1183168996495910),
            ("transfer_time", 0)
        ]
    );
}

#[test]
fn zhouhailin_transfer_has_two_callflows_newest_first() {
    let cdr = xml("zhouhailin_a_6a7ccd66_inbound.cdr.xml");
    check(&cdr, "6a7ccd66-6d2f-46c4-abd9-07cf37fc161e", Some("inbound"), "NORMAL_CLEARING", 2);
    assert_eq!(cdr.vars("DP_MATCH").collect::<Vec<_>>(), ["915121007938", "915121007938"]);
    assert_eq!(cdr.var("sip_from_display"), Some("Gong,baicheng"));
    assert_eq!(cdr.var("caller_id"), Some("\"Gong,baicheng\" <anonymous>"));
    let newest = cdr.newest_callflow().unwrap();
    assert_eq!(newest.attr("profile_index"), Some("2"));
    assert_eq!(newest.profile.get("destination_number"), Some("915121007938"));
    // Profile fields are not percent-encoded; the variable with the same content is.
    let source = "1560230086:a1f9bc91-93bd-4953-a806-99013c6dc2af:bl_xfer:915121007938/default/xml";
    assert_eq!(newest.profile.get("transfer_source"), Some(source));
    assert_eq!(cdr.var("transfer_source"), Some(source));
    assert_eq!(cdr.callflows[1].profile.get("destination_number"), Some("7010"));
    assert_eq!(cdr.callflows[1].time("transfer_time"), Some(1560230086376222));
    assert!(cdr.app_log[3].app_data.contains("fileupload?path=2019/06/11/13"));
}

#[test]
fn cgrates_2013_callflow_object_and_encoded_values() {
    let cdr = json("cgrates_2013_05_inbound.json");
    check(&cdr, "c8ccef5e-34c2-4fd2-9a2e-fa6f295f3a1e", Some("inbound"), "NORMAL_CLEARING", 1);
    assert_eq!(cdr.core_uuid.as_deref(), Some("9b8ce609-6413-437b-8cf3-bbb92aaf720a"));
    assert_eq!(cdr.var("RFC2822_DATE"), Some("Thu, 16 May 2013 14:33:28 +0200"));
    assert_eq!(cdr.var("DP_MATCH"), Some("ARRAY::1002|:1002"));
    assert_eq!(cdr.var("ringback"), Some("%(2000,4000,440,480)"));
    assert_eq!(cdr.var("sip_call_id"), Some("774f3a8a01222f664e6edebd372eef3d@0:0:0:0:0:0:0:0"));
    assert_eq!(cdr.app_log.len(), 22);
    assert_eq!(cdr.app_log[21].app_data, "user/1002@192.168.56.10");
    let cf = &cdr.callflows[0];
    assert_eq!(cf.attrs, vec![("dialplan".into(), "XML".into()), ("profile_index".into(), "1".into())]);
    assert_eq!(cf.extension.as_ref().unwrap().name, "tod_example");
    assert_eq!(cf.profile.originatee.len(), 2);
    assert_eq!(cf.profile.originatee[1].get("chan_name"), Some("sofia/internal/sip:1002@192.168.56.1:5060"));
    assert_eq!(cf.time("bridged_time"), None);
    assert_eq!(cf.time("answered_time"), Some(1368707611310737));
}

#[test]
fn cgrates_2018_values_are_not_encoded() {
    let cdr = json("cgrates_2018_teo_bridged_hold_transfer.json");
    check(&cdr, "5a3a1d91-90d3-4db4-af5c-cc3ae15d93a4", None, "NORMAL_CLEARING", 2);
    assert_eq!(cdr.switchname.as_deref(), Some("teo"));
    assert_eq!(cdr.var("sip_full_from"), Some("\"1001\" <sip:1001@192.168.56.202>;tag=df94d020"));
    assert_eq!(cdr.var("cgr_route"), Some("ARRAY::3|:supplier2|:supplier3|:supplier1"));
    assert_eq!(cdr.var("hold_events"), Some("{{1521025767847893,1521025783334494}}"));
    assert!(cdr.var("switch_r_sdp").unwrap().starts_with("v=0\r\no=1001-jitsi.org"));
    assert_eq!(cdr.app_log[0].app_stamp, Some(1521025758010697));
    assert_eq!(cdr.newest_callflow().unwrap().attr("profile_index"), Some("2"));
    assert_eq!(cdr.newest_callflow().unwrap().time("hold_accum_time"), Some(15486602));
    assert_eq!(cdr.callflows[1].extension.as_ref().unwrap().name, "CGRateS_Auth");
}

#[test]
fn somleng_2016_single_line_callflow_array() {
    let cdr = json("somleng_2016_inbound_originator_cancel_oneline.json");
    check(&cdr, "1b17f1e5-becb-4daa-8cb8-1ec822dd4297", Some("inbound"), "ORIGINATOR_CANCEL", 1);
    assert_eq!(cdr.switchname.as_deref(), Some("dave-ideapad"));
    assert_eq!(cdr.var("sip_full_from"), Some("<sip:1234@192.168.0.104;transport=UDP>;tag=50775c50"));
    assert_eq!(cdr.var("sip_user_agent"), Some("Z 3.3.25608 r25552"));
}

#[test]
fn somleng_2021_leg_pair_links_both_ways() {
    let a = json("somleng_2021_leg_a_joined_by_leg_b.json");
    let b = json("somleng_2021_leg_b.json");
    check(&a, "7bfa8442-8fa2-4daa-bf10-6be79c9a07f6", Some("outbound"), "NORMAL_CLEARING", 2);
    check(&b, "21bc47f2-250c-4d98-a157-0ad756d54027", Some("outbound"), "NORMAL_CLEARING", 2);
    assert_eq!(a.newest_callflow().unwrap().profile.originator[0].get("uuid"), b.uuid());
    assert_eq!(b.newest_callflow().unwrap().profile.originatee[0].get("uuid"), a.uuid());
    assert_eq!(a.var("bridge_uuid"), b.uuid());
    assert_eq!(a.var("sip_reason"), Some("Q.850;cause=16;text=\"Normal call clearing\""));
    assert_eq!(
        a.app_log,
        vec![Application { app_name: "rayo".into(), app_data: String::new(), app_stamp: Some(1624793636860404) }]
    );
    let ext = a.callflows[0].extension.as_ref().unwrap();
    assert_eq!((ext.name.as_str(), ext.number.as_str()), ("rayo", ""));
    assert_eq!(b.var("sip_rh_X-Twilio-CallSid"), Some("CA59915eb79d2816c7de55a69cac8dd003"));
    assert_eq!(b.var("channel_name"), Some("sofia/external/1234@somleng-foobar.sip.twilio.com"));
}

#[test]
fn somleng_2022_plus_sign_decodes_once() {
    let cdr = json("somleng_2022_inbound_answered.json");
    check(&cdr, "77e3b4f2-cac1-4724-81f6-f1cd5e01770c", Some("inbound"), "NORMAL_UNSPECIFIED", 1);
    assert_eq!(cdr.var("sip_from_user"), Some("+85516234567"));
    assert_eq!(cdr.var("caller_id"), Some("\"+85516234567\" <+85516234567>"));
    assert_eq!(cdr.callflows[0].profile.get("chan_name"), Some("sofia/external/+85516234567@27.109.112.140"));
}

#[test]
fn somleng_2025_bare_nan_is_accepted() {
    let cdr = json("somleng_2025_outbound_invalid_json_nan_mos.json");
    check(&cdr, "29326605-2668-4982-8365-df8939a82582", Some("outbound"), "NORMAL_CLEARING", 1);
    assert_eq!(cdr.var("rtp_audio_in_mos"), Some("nan"));
    assert_eq!(cdr.var("sip_destination_url"), Some("sip:69980528134193323@200.0.90.35"));
    assert_eq!(cdr.callflows[0].time("answered_time"), Some(1745629749659250));
}

#[test]
fn sniffing_and_empty_documents() {
    assert_eq!(parse(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b" \r\n\t").unwrap_err(), ParseError::Empty);
    assert_eq!(parse(b"\xEF\xBB\xBF").unwrap_err().to_string(), "document is empty");
    let e = parse(b"  ABC").unwrap_err();
    assert_eq!(e.to_string(), "document does not start with '<' or '{' (first byte 0x41 at offset 2)");
    assert_eq!(e.offset(), Some(2));
    assert_eq!(parse(b"\xEF\xBB\xBF{\"variables\":{\"uuid\":\"u\"}}").unwrap().uuid(), Some("u"));
    assert_eq!(parse(b"<cdr/>").unwrap().format, CdrFormat::Xml);
}

#[test]
fn uuid_and_direction_fallbacks() {
    let cdr =
        parse(br#"{"variables":{"uuid":" ","direction":"outbound"},"callflow":[{"caller_profile":{"uuid":""}}]}"#)
            .unwrap();
    assert_eq!((cdr.uuid(), cdr.direction()), (None, Some("outbound")));
    let cdr = parse(b"<cdr><callflow unique-id=\"p\"><caller_profile/></callflow></cdr>").unwrap();
    assert_eq!(cdr.uuid(), None);
}

#[test]
fn call_stats_are_read_as_dotted_paths() {
    let x = parse(
        b"<cdr><call-stats><audio><inbound><mos>4.49</mos><flaw_total>1</flaw_total></inbound></audio>\
          </call-stats><variables><uuid>u</uuid></variables></cdr>",
    )
    .unwrap();
    assert_eq!(
        x.call_stats,
        vec![("audio.inbound.mos".into(), "4.49".into()), ("audio.inbound.flaw_total".into(), "1".into())]
    );
    let j = parse(br#"{"callStats":{"audio":{"inbound":{"mos":nan,"errorLog":[{"a":1}],"flaw_total":2}}}}"#).unwrap();
    assert_eq!(
        j.call_stats,
        vec![("audio.inbound.mos".into(), "null".into()), ("audio.inbound.flaw_total".into(), "2".into())]
    );
}

proptest! {
    #[test]
    fn parse_never_panics(doc in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&doc);
    }

    #[test]
    fn parse_never_panics_on_cdr_shaped_input(
        xml_body in "[<>/a-z_:&;#x0-9\"= %\u{e9}\u{fffd}-]{0,200}",
        json_body in "[{}\\[\\]\",:a-z0-9\\\\. %+-]{0,200}",
    ) {
        let _ = parse(format!("<cdr><variables>{xml_body}").as_bytes());
        let _ = parse(format!("<cdr>{xml_body}</cdr>").as_bytes());
        let _ = parse(format!("{{\"variables\":{json_body}").as_bytes());
        let _ = parse(format!("{{\"callflow\":[{json_body}]}}").as_bytes());
    }
}
