from django.http import JsonResponse
from django.urls import path


def index(request):
    return JsonResponse({"message": "Hello from Django"})


urlpatterns = [path("", index)]
