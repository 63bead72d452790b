from importlib.metadata import version

import itsdangerous
import textutil

print(textutil.shout("report"), "report-job", version("report-job"), itsdangerous.__name__)
