//! Tests of `normalize`.
use super::*;
use crate::domain::tasks::TaskType;

fn xml(vars: &str, callflow: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?>\n<cdr><variables>{vars}</variables>{callflow}</cdr>").into_bytes()
}

#[test]
fn headline_from_variables_and_profile() {
    let doc = xml(
        "<uuid>0D2E4C6A-1111-2222-3333-444455556666</uuid><direction>inbound</direction>\
         <start_epoch>1700000000</start_epoch><answer_epoch>1700000005</answer_epoch>\
         <end_epoch>1700000065</end_epoch><billsec>60</billsec><duration>65</duration>\
         <hangup_cause>NORMAL_CLEARING</hangup_cause><rmOrgID>42</rmOrgID>",
        "<callflow><caller_profile><caller_id_number>%2B441234</caller_id_number>\
         <destination_number>+442071234567</destination_number></caller_profile></callflow>",
    );
    let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
    assert_eq!(n.uuid, "0d2e4c6a-1111-2222-3333-444455556666");
    assert_eq!(n.table_suffix, 20231114);
    assert_eq!(n.hour_dir, "20231114T2200");
    assert_eq!(n.org_id, 42);
    // profile fields are not percent-encoded: "%2B" stays as written there
    let get = |k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("caller_id_number"), Some("%2B441234"));
    assert_eq!(get("destination_number"), Some("+442071234567"));
    assert_eq!(get("billsec"), Some("60"));
    let rows: Vec<_> = n.task_rows().into_iter().map(|(t, i)| format!("{t}@{i}")).collect();
    assert_eq!(rows, ["billing@0", "calllog@1"], "no Salesforce org: no CDR2SFAPI");
    let x = n.to_xml();
    assert!(x.contains("<uuid record=\"true\">0d2e4c6a-1111-2222-3333-444455556666</uuid>"), "{x}");
    assert!(x.contains("<task type=\"billing\">\n      <quantity>60</quantity>"), "{x}");
}

#[test]
fn times_fill_in_for_missing_variables() {
    let doc = xml(
        "<hangup_cause>UNALLOCATED</hangup_cause>",
        "<callflow><caller_profile><uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid></caller_profile>\
         <times><created_time>1181000000000000</created_time><answered_time>1181000002500000</answered_time>\
         <hangup_time>1181000071000000</hangup_time></times></callflow>",
    );
    let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
    let get = |k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("start_epoch"), "1181000000");
    assert_eq!(get("answer_epoch"), "1181000002");
    assert_eq!(get("billsec"), "69");
    assert_eq!(get("duration"), "71");
}

#[test]
fn contradicting_timings_follow_one_rule() {
    let get = |n: &NormalizedCdr, k: &str| n.data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    let times = "<callflow><caller_profile><uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid></caller_profile>\
         <times><created_time>1700000000000000</created_time><answered_time>1700000010000000</answered_time>\
         <hangup_time>1700000070000000</hangup_time></times></callflow>";
    // billsec larger than duration: the <times> are consistent and decide
    let doc = xml(
        "<start_epoch>1700000000</start_epoch><answer_epoch>1700000010</answer_epoch>\
         <end_epoch>1700000070</end_epoch><duration>70</duration><billsec>700</billsec>",
        times,
    );
    let n = normalize_document(&doc, &Default::default()).unwrap();
    assert_eq!((get(&n, "duration"), get(&n, "billsec")), ("70".into(), "60".into()));
    // an answer after the end and no <times>: no answer, nothing billed
    let doc = xml(
        "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><start_epoch>1700000000</start_epoch>\
         <answer_epoch>1700000100</answer_epoch><end_epoch>1700000070</end_epoch><duration>70</duration>\
         <billsec>-30</billsec>",
        "",
    );
    let n = normalize_document(&doc, &Default::default()).unwrap();
    assert_eq!(
        (get(&n, "answer_epoch"), get(&n, "billsec"), get(&n, "duration")),
        ("0".into(), "0".into(), "70".into())
    );
    assert!(n.tasks.iter().all(|t| t.task_type != TaskType::Billing), "not billed");
}

#[test]
fn missing_or_bad_uuid_is_a_permanent_error() {
    let none = xml("<hangup_cause>X</hangup_cause>", "");
    assert_eq!(normalize_document(&none, &Default::default()).unwrap_err(), NormalizeError::NoUuid);
    let bad = xml("<uuid>not-a-uuid</uuid>", "");
    assert!(matches!(normalize_document(&bad, &Default::default()), Err(NormalizeError::BadUuid(_))));
}

#[test]
fn the_deck_rates_answered_calls_unless_the_cdr_carries_retail_values() {
    let deck = "prefix,country_code,country,primary_band_type,sub_band_type,charge_band,connect_charge,rate,rate_type,first_increment,next_increment\n\
                44,GB,United Kingdom,International,Geographic,A,0.01,0.02,perMinute,60,60\n\
                4420,GB,United Kingdom,National,London,L,0,0.006,perMinute,30,6\n";
    let ctx = NormalizeContext {
        rates: Some(std::sync::Arc::new(RateDeck::parse(deck).unwrap())),
        default_country_code: Some("44".into()),
        ..Default::default()
    };
    let call = |dest: &str, billsec: u32, extra: &str| {
        let answer = if billsec > 0 { 1700000005 } else { 0 };
        xml(
            &format!(
                "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><direction>outbound</direction>\
                 <start_epoch>1700000000</start_epoch><answer_epoch>{answer}</answer_epoch>\
                 <end_epoch>1700000100</end_epoch><billsec>{billsec}</billsec>{extra}"
            ),
            &format!(
                "<callflow><caller_profile><destination_number>{dest}</destination_number></caller_profile></callflow>"
            ),
        )
    };
    let get = |n: &NormalizedCdr, k: &str| n.data.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    // London, national format, 31 s: 30/6 -> 36 s at 0.006/min = 0.0036
    let n = normalize_document(&call("020 7123 4567", 31, ""), &ctx).unwrap();
    assert_eq!(get(&n, "retailPrefix").as_deref(), Some("4420"));
    assert_eq!(get(&n, "retailRateType").as_deref(), Some("perMinute"));
    assert_eq!(get(&n, "quantity").as_deref(), Some("36"));
    assert_eq!(get(&n, "retailCharge").as_deref(), Some("0.0036"));
    assert_eq!(n.tasks[0].params, vec![("quantity".to_string(), "36".to_string())], "billing bills the increments");
    // unanswered: rated but nothing billed, no billing task
    let n = normalize_document(&call("+441312345678", 0, ""), &ctx).unwrap();
    assert_eq!((get(&n, "quantity").as_deref(), get(&n, "retailCharge").as_deref()), (Some("0"), Some("0")));
    assert!(n.tasks.iter().all(|t| t.task_type != TaskType::Billing));
    // the CDR's own retail values win over the deck
    let n = normalize_document(
        &call("+441312345678", 60, "<retailRate>0.5</retailRate><retailRateType>perCall</retailRateType>"),
        &ctx,
    )
    .unwrap();
    assert_eq!(get(&n, "retailRate").as_deref(), Some("0.5"));
    assert_eq!(get(&n, "retailPrefix"), None);
    assert_eq!(get(&n, "quantity").as_deref(), Some("60"));
    // a carried rate that is not a decimal: a warning, and the deck rates the call
    let n = normalize_document(&call("020 7123 4567", 31, "<retailRate>0.02%20USD</retailRate>"), &ctx).unwrap();
    assert_eq!(get(&n, "retailRate").as_deref(), Some("0.006"));
    assert_eq!(get(&n, "retailCharge").as_deref(), Some("0.0036"));
    let warned: Vec<_> = n.warnings.iter().map(|w| (w.field.as_str(), w.value.as_str())).collect();
    assert_eq!(warned, [("retailRate", "0.02 USD")]);
    // no deck: no retail fields, quantity is billsec
    let n = normalize_document(&call("+441312345678", 61, ""), &NormalizeContext::default()).unwrap();
    assert_eq!((get(&n, "retailRate"), get(&n, "quantity").as_deref()), (None, Some("61")));
}

#[test]
fn a_field_map_and_the_org_directory_drive_the_record_and_its_tasks() {
    let map = FieldMap::parse(
        "caller_id_number = number: var:pbx_caller\ndomain = text: var:pbx_domain\ngateway = text: var:trunk",
    )
    .unwrap();
    let orgs = OrgDirectory::parse(
        "key,org_id,sf_org_id,notify_email,notify_sms,transcription\n\
         domain:acme.example,12,00D000000000ACM,alerts@acme.example,,no\n",
    )
    .unwrap();
    let ctx = NormalizeContext {
        field_map: Some(std::sync::Arc::new(map)),
        orgs: Some(std::sync::Arc::new(orgs)),
        ..Default::default()
    };
    let doc = xml(
        "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><direction>inbound</direction>\
         <start_epoch>1700000000</start_epoch><answer_epoch>0</answer_epoch><end_epoch>1700000020</end_epoch>\
         <pbx_caller>%2B44 7700 900123</pbx_caller><pbx_domain>ACME.example</pbx_domain><trunk>carrier-a</trunk>\
         <record_path>/rec</record_path><record_name>m.wav</record_name>",
        "<callflow><caller_profile><caller_id_number>ignored</caller_id_number></caller_profile></callflow>",
    );
    let n = normalize_document(&doc, &ctx).unwrap();
    let get = |k: &str| n.data.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("caller_id_number").as_deref(), Some("+447700900123"), "the map renames the source");
    assert_eq!(get("gateway").as_deref(), Some("carrier-a"));
    assert_eq!(get("sip_call_id"), None, "only the configured map applies");
    assert_eq!((n.org_id, get("rmOriginatorOrgId").as_deref()), (12, Some("12")));
    let types: Vec<_> = n.tasks.iter().map(|t| t.task_type).collect();
    // missed call of an org with Salesforce and an alert address; transcription off for it
    assert_eq!(types, [TaskType::Calllog, TaskType::Cdr2SfApi, TaskType::RecordingDelivery, TaskType::Emailer]);
    assert_eq!(n.tasks[1].params, vec![("sf_org_id".to_string(), "00D000000000ACM".to_string())]);
    assert_eq!(n.tasks[3].params, vec![("to".to_string(), "alerts@acme.example".to_string())]);
}

#[test]
fn escaping_keeps_the_document_well_formed() {
    assert_eq!(xml_escape("a<b>&\"c\u{1}"), "a&lt;b&gt;&amp;&quot;c");
}

/// A flipped originated leg: the profile names the callee 2000; `vars` say what was presented.
fn flipped(vars: &str, profile_extra: &str) -> NormalizedCdr {
    let doc = xml(
        &format!(
            "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><channel_cid_flipped>yes</channel_cid_flipped>\
             <start_epoch>1700000000</start_epoch>{vars}"
        ),
        &format!(
            "<callflow><caller_profile><caller_id_number>2000</caller_id_number><caller_id_name>Callee</caller_id_name>\
             <destination_number>2000</destination_number>{profile_extra}</caller_profile></callflow>"
        ),
    );
    normalize_document(&doc, &NormalizeContext::default()).unwrap()
}

fn field(n: &NormalizedCdr, k: &str) -> String {
    n.data.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone()).unwrap_or_default()
}

#[test]
fn a_flipped_leg_is_billed_to_the_number_it_presented_from_each_source() {
    let all = "<pre_transfer_caller_id_number>1001</pre_transfer_caller_id_number>\
               <origination_caller_id_number>1002</origination_caller_id_number>\
               <sip_from_user>1003</sip_from_user><ani>1004</ani>";
    assert_eq!(field(&flipped(all, "<callee_id_number>1005</callee_id_number>"), "caller_id_number"), "1001");
    let cases = [
        (
            "<origination_caller_id_number>1002</origination_caller_id_number><sip_from_user>1003</sip_from_user>",
            "",
            "1002",
        ),
        ("<sip_from_user>1003</sip_from_user>", "<callee_id_number>1005</callee_id_number>", "1005"),
        ("<sip_from_user>1003</sip_from_user><ani>1004</ani>", "", "1003"),
        ("<ani>1004</ani>", "", "1004"),
    ];
    for (vars, extra, want) in cases {
        let n = flipped(vars, extra);
        assert_eq!(field(&n, "caller_id_number"), want, "{vars} {extra}");
        assert_eq!(field(&n, "destination_number"), "2000", "the callee stays the destination");
    }
    // nothing recorded the presented number: the profile is all there is
    assert_eq!(field(&flipped("", ""), "caller_id_number"), "2000");
    // the name follows the same rule
    let named = flipped("<pre_transfer_caller_id_name>Alice</pre_transfer_caller_id_name>", "");
    assert_eq!(field(&named, "caller_id_name"), "Alice");
    // a leg that was not flipped keeps its profile's caller
    let plain = normalize_document(
        &xml(
            "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><pre_transfer_caller_id_number>1001</pre_transfer_caller_id_number>",
            "<callflow><caller_profile><caller_id_number>3000</caller_id_number></caller_profile></callflow>",
        ),
        &NormalizeContext::default(),
    )
    .unwrap();
    assert_eq!(field(&plain, "caller_id_number"), "3000");
}

#[test]
fn loopback_halves_get_neither_billing_nor_calllog() {
    let leg = |vars: &str| {
        let doc = xml(
            &format!(
                "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><direction>inbound</direction>\
                 <start_epoch>1700000000</start_epoch><answer_epoch>1700000005</answer_epoch>\
                 <end_epoch>1700000065</end_epoch><billsec>60</billsec>{vars}"
            ),
            "",
        );
        let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
        n.tasks.iter().map(|t| t.task_type).collect::<Vec<_>>()
    };
    assert_eq!(leg(""), [TaskType::Billing, TaskType::Calllog]);
    assert!(leg("<is_loopback>1</is_loopback><loopback_leg>B</loopback_leg>").is_empty());
    assert!(leg("<channel_name>loopback/1000-b</channel_name>").is_empty());
    let a_half =
        "<is_loopback>1</is_loopback><loopback_leg>A</loopback_leg><channel_name>loopback/1000-a</channel_name>";
    let bridged = format!("{a_half}<loopback_from_uuid>0d2e4c6a-1111-2222-3333-444455550000</loopback_from_uuid>");
    assert!(leg(&bridged).is_empty(), "the -a half a real leg bridged to");
    // `originate loopback/1000 …` from the API: no leg before it, the -a half is the caller's
    assert_eq!(leg(a_half), [TaskType::Billing, TaskType::Calllog]);
}

#[test]
fn values_that_do_not_fit_their_type_are_left_empty_with_a_warning() {
    let doc = xml(
        "<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><user_name>default</user_name>\
         <rm_user_id>1e3</rm_user_id><lcr_rate>0.01%20USD</lcr_rate><rmOrgID>acme</rmOrgID>",
        "",
    );
    let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
    assert_eq!(field(&n, "rmOriginatorUserId"), "");
    assert_eq!(field(&n, "lcr_rate"), "");
    assert_eq!(field(&n, "originator_username"), "default", "the user name is kept, as text");
    assert_eq!(n.org_id, 0);
    let warned: Vec<_> = n.warnings.iter().map(|w| (w.field.as_str(), w.value.as_str())).collect();
    assert_eq!(warned, [("rmOriginatorUserId", "1e3"), ("lcr_rate", "0.01 USD"), ("rmOrgID", "acme")]);
    let x = n.to_xml();
    assert!(x.contains("<warning field=\"lcr_rate\" value=\"0.01 USD\" reason=\"not a decimal number"), "{x}");
    let back = crate::domain::ncdr::NormalizedDoc::parse(x.as_bytes()).unwrap();
    assert_eq!(back.warnings, n.warnings, "the warnings read back from the document");
    for (v, fits) in [("NaN", false), ("inf", false), ("12345678901234567890123", false), ("-0.5", true), ("42", true)]
    {
        assert_eq!(crate::domain::mapping::FieldType::Decimal.check(v).is_ok(), fits, "{v}");
    }
    // a bad rmOrgID does not hide a good rm_org_id
    let doc =
        xml("<uuid>0d2e4c6a-1111-2222-3333-444455556666</uuid><rmOrgID>acme</rmOrgID><rm_org_id>7</rm_org_id>", "");
    let n = normalize_document(&doc, &NormalizeContext::default()).unwrap();
    assert_eq!((n.org_id, n.warnings.len()), (7, 1));
    assert!(crate::domain::mapping::FieldType::Int.check("12345678901234567890123").is_err());
    assert!(crate::domain::mapping::FieldType::Epoch.check("-5").is_err());
}
