"""Smoke check of the local S3 servers with a real, signed S3 client (boto3).

Run through `./localstack/servers.sh check` (it uses the LocalStack venv, which ships boto3).
Checks what the store relies on: signed PUT/GET/HEAD/LIST/DELETE with the test/test keys; a
create-only put (`If-None-Match: *`) refused the second time, and exactly one winner among 16
racing create-only writers; a put with a stale `If-Match` ETag refused. Exits non-zero if a check
fails, so it also tells whether a server was set up right (e.g. SeaweedFS credentials).
"""

import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

SERVERS = {
    "localstack": "http://127.0.0.1:4566",
    "seaweedfs": "http://127.0.0.1:8333",
}
BUCKET = "ldk-test"


def client(endpoint, key="test", secret="test"):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, max_pool_connections=32
        ),
    )


def error_code(err):
    return err.response.get("Error", {}).get("Code"), err.response["ResponseMetadata"]["HTTPStatusCode"]


def check(name, endpoint):
    s3 = client(endpoint)
    prefix = f"smoke-{uuid.uuid4().hex[:8]}/"
    key = prefix + "a/b"

    s3.put_object(Bucket=BUCKET, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello", "GET body"
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 5, "HEAD length"

    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert [o["Key"] for o in listed.get("Contents", [])] == [key], f"LIST: {listed.get('Contents')}"
    by_dir = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, Delimiter="/")
    assert [p["Prefix"] for p in by_dir.get("CommonPrefixes", [])] == [prefix + "a/"], "LIST with delimiter"

    # Create-only: the first put wins, the second must be refused (412 PreconditionFailed; 409 is
    # also what some servers send, and object_store maps both to a failure of the write).
    once = prefix + "once"
    s3.put_object(Bucket=BUCKET, Key=once, Body=b"first", IfNoneMatch="*")
    try:
        s3.put_object(Bucket=BUCKET, Key=once, Body=b"second", IfNoneMatch="*")
        raise AssertionError("second create-only put was accepted")
    except ClientError as err:
        code = error_code(err)
        assert code[1] in (409, 412), f"second create-only put: {code}"
        print(f"  {name}: second If-None-Match put refused with {code[1]} {code[0]}")
    assert s3.get_object(Bucket=BUCKET, Key=once)["Body"].read() == b"first", "create-only overwrote"

    # 16 racing create-only writers: exactly one may win, and its body must be what is stored.
    raced = prefix + "raced"

    def racer(i):
        try:
            s3.put_object(Bucket=BUCKET, Key=raced, Body=b"racer %d" % i, IfNoneMatch="*")
            return i
        except ClientError:
            return None

    with ThreadPoolExecutor(16) as pool:
        winners = [i for i in pool.map(racer, range(16)) if i is not None]
    assert len(winners) == 1, f"racing create-only puts, winners: {winners}"
    body = s3.get_object(Bucket=BUCKET, Key=raced)["Body"].read()
    assert body == b"racer %d" % winners[0], f"racing create-only puts stored {body!r}"

    # Update with a stale ETag must be refused too (If-Match).
    etag = s3.head_object(Bucket=BUCKET, Key=once)["ETag"]
    s3.put_object(Bucket=BUCKET, Key=once, Body=b"third", IfMatch=etag)
    try:
        s3.put_object(Bucket=BUCKET, Key=once, Body=b"fourth", IfMatch=etag)
        raise AssertionError("put with a stale If-Match ETag was accepted")
    except ClientError as err:
        code = error_code(err)
        assert code[1] == 412, f"stale If-Match put: {code}"

    for k in (key, once, raced):
        s3.delete_object(Bucket=BUCKET, Key=k)
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
        raise AssertionError("object still there after DELETE")
    except ClientError as err:
        assert error_code(err)[1] == 404, f"HEAD after DELETE: {error_code(err)}"
    s3.delete_object(Bucket=BUCKET, Key=key)  # deleting a missing key is fine on S3
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents"), "LIST after DELETE"

    # Wrong secret: SeaweedFS must refuse it (LocalStack does not check signatures).
    try:
        client(endpoint, secret="wrong").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        print(f"  {name}: a wrong secret key is accepted (signatures are not checked)")
    except ClientError as err:
        print(f"  {name}: a wrong secret key is refused ({error_code(err)[1]} {error_code(err)[0]})")


def main():
    names = sys.argv[1:] or list(SERVERS)
    failed = 0
    for name in names:
        try:
            check(name, SERVERS[name])
            print(f"{name}: ok")
        except Exception as err:  # report every server, then fail
            failed += 1
            print(f"{name}: FAILED: {type(err).__name__}: {err}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
