//! A guardrail's assessment as log lines: for each policy that acted, its kind, what it matched
//! by category and the action it took. Never the matched text, the regex or the model's output:
//! those may hold the very data a guardrail exists to keep out of logs.

use aws_sdk_bedrockruntime::types::{GuardrailAssessment, GuardrailTraceAssessment};

/// `input:topic:<name>:BLOCKED`, `output:pii:EMAIL:ANONYMIZED`, … for every policy finding.
pub fn summarize(trace: &GuardrailTraceAssessment) -> Vec<String> {
    let mut out = Vec::new();
    for assessment in trace.input_assessment.iter().flat_map(|m| m.values()) {
        findings("input", assessment, &mut out);
    }
    for assessments in trace.output_assessments.iter().flat_map(|m| m.values()) {
        for assessment in assessments {
            findings("output", assessment, &mut out);
        }
    }
    if let Some(reason) = &trace.action_reason {
        out.push(format!("reason:{reason}"));
    }
    out
}

fn findings(side: &str, a: &GuardrailAssessment, out: &mut Vec<String>) {
    let mut note = |finding: String| out.push(format!("{side}:{finding}"));
    for t in a.topic_policy.iter().flat_map(|p| &p.topics) {
        note(format!("topic:{}:{}", t.name, t.action.as_str()));
    }
    for f in a.content_policy.iter().flat_map(|p| &p.filters) {
        note(format!(
            "content:{}:{}:{}",
            f.r#type.as_str(),
            f.confidence.as_str(),
            f.action.as_str()
        ));
    }
    if let Some(words) = &a.word_policy {
        for w in &words.custom_words {
            note(format!("word:custom:{}", w.action.as_str()));
        }
        for w in &words.managed_word_lists {
            note(format!("word:{}:{}", w.r#type.as_str(), w.action.as_str()));
        }
    }
    if let Some(sensitive) = &a.sensitive_information_policy {
        for p in &sensitive.pii_entities {
            note(format!("pii:{}:{}", p.r#type.as_str(), p.action.as_str()));
        }
        for r in &sensitive.regexes {
            let name = r.name.as_deref().unwrap_or("regex");
            note(format!("regex:{name}:{}", r.action.as_str()));
        }
    }
    for g in a
        .contextual_grounding_policy
        .iter()
        .flat_map(|p| p.filters.iter().flatten())
    {
        note(format!(
            "grounding:{}:{}",
            g.r#type.as_str(),
            g.action.as_str()
        ));
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_bedrockruntime::types::{
        GuardrailPiiEntityFilter, GuardrailPiiEntityType,
        GuardrailSensitiveInformationPolicyAction, GuardrailSensitiveInformationPolicyAssessment,
        GuardrailTopic, GuardrailTopicPolicyAction, GuardrailTopicPolicyAssessment,
        GuardrailTopicType,
    };

    use super::*;

    #[test]
    fn findings_name_the_policy_and_action_never_the_match() {
        let topic = GuardrailTopic::builder()
            .name("investment advice")
            .r#type(GuardrailTopicType::Deny)
            .action(GuardrailTopicPolicyAction::Blocked)
            .build()
            .unwrap();
        let pii = GuardrailPiiEntityFilter::builder()
            .r#match("alice@example.com")
            .r#type(GuardrailPiiEntityType::Email)
            .action(GuardrailSensitiveInformationPolicyAction::Anonymized)
            .build()
            .unwrap();
        let input = GuardrailAssessment::builder()
            .topic_policy(
                GuardrailTopicPolicyAssessment::builder()
                    .topics(topic)
                    .build()
                    .unwrap(),
            )
            .build();
        let output = GuardrailAssessment::builder()
            .sensitive_information_policy(
                GuardrailSensitiveInformationPolicyAssessment::builder()
                    .pii_entities(pii)
                    .set_regexes(Some(Vec::new()))
                    .build()
                    .unwrap(),
            )
            .build();
        let trace = GuardrailTraceAssessment::builder()
            .input_assessment("g1", input)
            .output_assessments("g1", vec![output])
            .model_output("the secret answer")
            .build();
        let summary = summarize(&trace);
        assert_eq!(
            summary,
            [
                "input:topic:investment advice:BLOCKED",
                "output:pii:EMAIL:ANONYMIZED"
            ]
        );
        let all = summary.join(" ");
        assert!(!all.contains("alice@example.com") && !all.contains("secret"));
    }
}
