"""Values every part of the local stack agrees on. Standard library only: a function's worker
imports this too, and must start fast."""

#: Every local server listens here only: nothing of the stack is reachable from another machine.
LOOPBACK = "127.0.0.1"
#: The account and region the local resources are made in (moto's defaults).
ACCOUNT = "123456789012"
REGION = "us-east-1"


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
