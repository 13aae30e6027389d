"""The work that runs on Ray workers, one module per stage of a job:

    fetch.py    listed keys → their bytes (or a fetch error), as CPU tasks
    decode.py   fetched bytes → an image, or the error kind it earns      } on the codec replica
    encode.py   CodecReplica: the model loaded once; encode and verify    }
    crashes.py  in-flight markers: which keys killed a replica
    restore.py  RestoreReplica: committed records → image files

Every stage turns each input row into exactly one output row; rows are built by
``pipeline.schema``, paths named by ``pipeline.archive``; the drivers (``pipeline.compress``,
``pipeline.restore``) wire stages into datasets with ``pipeline.driver``.
"""
