from tests.mailstack import mailstack, mailstack_factory  # noqa: F401
