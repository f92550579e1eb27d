from django.urls import path

from . import views

urlpatterns = [path("orders/<str:key>/", views.place_order)]
