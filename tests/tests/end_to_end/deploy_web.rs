#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The browser app's hosting in `deploy/template.yaml` (`WebApp=true`): a private bucket only
//! CloudFront reads, over HTTPS, and the HTTP API open to that origin alone.

use serde_json::json;

use super::deploy::template;

#[test]
fn the_web_bucket_is_private_behind_cloudfront_and_the_api_takes_its_origin_only() {
    let t = template();
    let resources = &t["Resources"];
    for name in [
        "WebBucket",
        "WebBucketPolicy",
        "WebOriginAccessControl",
        "WebHeaders",
        "WebDistribution",
    ] {
        assert_eq!(resources[name]["Condition"], "HasWebApp", "{name}");
    }
    let bucket = &resources["WebBucket"]["Properties"];
    let blocked = &bucket["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(blocked[setting], true, "{setting}");
    }
    // One reader: CloudFront, for this distribution.
    let statements = resources["WebBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0]["Principal"],
        json!({"Service": "cloudfront.amazonaws.com"})
    );
    assert_eq!(statements[0]["Action"], "s3:GetObject");
    let source = statements[0]["Condition"]["StringEquals"]["AWS:SourceArn"].to_string();
    assert!(source.contains("WebDistribution"), "{source}");

    let behaviour =
        &resources["WebDistribution"]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"];
    assert_eq!(behaviour["ViewerProtocolPolicy"], "redirect-to-https");
    let headers = &resources["WebHeaders"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"];
    assert_eq!(headers["FrameOptions"]["FrameOption"], "DENY");

    // CORS on the HTTP API: only with the app, and only for its origin.
    let cors = &resources["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"];
    assert_eq!(cors[0], "HasWebApp");
    let origins = cors[1]["AllowOrigins"].to_string();
    assert!(origins.contains("WebDistribution.DomainName"), "{origins}");
    assert_eq!(cors[2], json!({"Ref": "AWS::NoValue"}));
}
