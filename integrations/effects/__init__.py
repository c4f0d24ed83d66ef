"""The executors of the effects workflows ask for (engine/effects.py), one module per family.

- ``outbox.py``: how an effect is stored in the outbox and read back (the one codec);
- ``executor.py``: the executor contract and the registry the relay dispatches on, by effect type;
- ``channels.py``: creating a conversation's channel, taking members out of it;
- ``messages.py``: posting into a channel (messages, SMS replies) exactly once (``post_once``);
- ``texts.py``: texts (about a message, keyword answers, reply-code questions);
- ``break_glass.py``: the compliance alert of an emergency access;
- ``recalls.py``: a recalled message deleted from its channel, and the notice posted in its place;
- ``attachments.py``: a message's attached file posted into its channel as a file message.

The relay (``integrations/relay/``) claims rows, dispatches each effect to its executor and settles
the outcomes; the executors know nothing of leases, retries or audit.
"""
