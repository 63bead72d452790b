SECRET_KEY = "corpus-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "site_cfg.urls"
WSGI_APPLICATION = "site_cfg.wsgi.application"
INSTALLED_APPS = []
DATABASES = {}
