"""Simple Relay v2, rewritten in Python for AWS Lambda.

Handlers live in ``websocket_handler``, ``stream_handler``, ``http_handler`` and
``cleanup_handler``; everything else is shared logic. Only boto3 is needed at run time.
"""
