"""Creates the compose stack's S3 bucket once the S3 server answers (run in the moto image,
which has boto3). Exits non-zero after a minute without an answer."""
import os
import time

import boto3
import botocore.exceptions

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id="cdrmunch-dev",
    aws_secret_access_key="cdrmunch-dev-secret",
)
bucket = os.environ["S3_BUCKET"]
deadline = time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket=bucket)
        print(f"bucket {bucket} ready")
        break
    except s3.exceptions.BucketAlreadyOwnedByYou:
        print(f"bucket {bucket} exists")
        break
    except botocore.exceptions.EndpointConnectionError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
